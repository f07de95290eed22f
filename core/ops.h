#pragma once
// The functional, differentiable API (PyTorch's torch.* / F.* in C++). Every op here:
//  - validates dtype, device and shapes and names itself in the error,
//  - dispatches by device in exactly one place (see core/dispatch.h),
//  - records an autograd node when an input requires grad.
// Kernels (compute only) live in kernels/cpu and kernels/cuda.
#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "core/tensor.h"

namespace hmer {

class Generator;

enum class Reduction { None, Mean, Sum };
Reduction reduction_from_string(const std::string& s);  // "none" | "mean" | "sum"

// ---- element-wise --------------------------------------------------------------------------
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor square(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor pow(const Tensor& x, double exponent);
Tensor relu(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
// Keras 2: clip(0.2x + 0.5, 0, 1); Keras >= 3.1 / torch.nn.Hardsigmoid: relu6(x + 3) / 6.
enum class HardSigmoidKind { Keras2, Keras3 };
Tensor hard_sigmoid(const Tensor& x, HardSigmoidKind kind);

// Broadcasting binary ops (NumPy rules). A double operand is rounded to the tensor dtype first,
// as PyTorch does with Python scalars.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double b);
Tensor mul(const Tensor& a, double b);
Tensor rsub(const Tensor& a, double b);  // b - a
Tensor div(const Tensor& a, double b);
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// ---- reductions ----------------------------------------------------------------------------
Tensor sum(const Tensor& x);  // all elements -> scalar (shape {})
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
// max over one dim; the gradient flows to the index returned (the first maximum).
struct ValuesIndices {
  Tensor values;
  Tensor indices;  // int64
};
ValuesIndices max(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor amax(const Tensor& x);  // all elements; gradient split evenly between ties (as torch)

// ---- linear algebra -----------------------------------------------------------------------
// (M, K) x (K, N) -> (M, N); (B, M, K) x (B, K, N) -> (B, M, N)
Tensor matmul(const Tensor& a, const Tensor& b);
// x (..., in), weight (out, in), bias (out) optional -> (..., out)
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---- convolution and pooling ------------------------------------------------------------------
using Pair = std::array<int64_t, 2>;
std::string pair_str(const Pair& p);  // "(a, b)", for error messages
struct Conv2dOptions {
  Pair stride{1, 1};
  Pair padding{0, 0};
  Pair dilation{1, 1};
};
// x (N, C, H, W), weight (O, C, kh, kw), bias (O) optional -> (N, O, OH, OW). An x whose images are
// each one contiguous block (a leading or inner channel slice of a wider tensor, e.g. ChannelConcat's
// results) is read and saved for the backward as a view, not copied: as for any saved tensor, writing
// into those elements before the backward would change grad_weight (ChannelConcat never does).
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              const Conv2dOptions& options = {});

struct Pool2dOptions {
  Pair kernel{2, 2};
  Pair stride{0, 0};  // 0 = same as kernel (PyTorch default)
  Pair padding{0, 0};
  bool ceil_mode = false;
  bool count_include_pad = true;  // avg_pool2d only
};
Tensor max_pool2d(const Tensor& x, const Pool2dOptions& options);  // (N, C, H, W)
// PyTorch divisor: with ceil_mode the window is clipped to the padded input, so the border
// divisor is the number of in-range (input + padding) elements.
Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& options);
// Output size of a pooling window along one axis, with PyTorch's ceil_mode rule.
int64_t pool_output_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode);

// ---- normalisation ------------------------------------------------------------------------------
// Torch: running = (1-m)*running + m*batch, running_var uses the unbiased batch variance.
// Paddle: running = m*running + (1-m)*batch with the *biased* batch variance (m = 1 - torch's).
enum class BatchNormFlavor { Torch, Paddle };
struct BatchNormOptions {
  bool training = true;
  double momentum = 0.1;  // in the flavour's own convention
  double eps = 1e-5;
  BatchNormFlavor flavor = BatchNormFlavor::Torch;
};
// x (N, C, H, W); weight/bias (C) optional; running_mean/var (C) updated in place when training
// (may be undefined in training, then no running statistics are kept).
Tensor batch_norm2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                    const Tensor& running_var, const BatchNormOptions& options);
// dropout(relu(batch_norm2d(x, …)), p, dropout_training, generator) in one pass, bit for bit: the
// same values, gradients, running-statistics update and generator draw. Its backward keeps x, the
// statistics, copies of weight and bias, and the dropout mask as bits (the ReLU sign is recomputed):
// one (N, C, H, W) float tensor where the separate ops keep three (the BN input, the ReLU's input
// and output; dropout regenerates its mask).
Tensor batch_norm_relu_dropout(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                               const Tensor& running_var, const BatchNormOptions& options, double p,
                               bool dropout_training, Generator* generator = nullptr);
// conv2d(batch_norm_relu_dropout(x, …), conv_weight, no bias, conv_options): DenseNet's bottleneck
// middle (BN → ReLU → dropout → 3×3 conv), bit for bit, as one node that keeps what
// batch_norm_relu_dropout keeps and the conv weight. The activation between the two, which the
// separate ops would keep for the conv's grad_weight, is recomputed in the backward instead.
Tensor batch_norm_relu_dropout_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                      const Tensor& running_mean, const Tensor& running_var,
                                      const BatchNormOptions& options, double p, bool dropout_training,
                                      Generator* generator, const Tensor& conv_weight,
                                      const Conv2dOptions& conv_options);

// ---- activations over a dim ---------------------------------------------------------------------
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);

// ---- losses -------------------------------------------------------------------------------------
// logits (N, C) float, target (N) int64. Torch semantics: entries equal to ignore_index add 0 and
// are excluded from the mean's denominator (sum of class weights of the kept entries).
Tensor cross_entropy(const Tensor& logits, const Tensor& target, const Tensor& weight = Tensor(),
                     int64_t ignore_index = -100, Reduction reduction = Reduction::Mean);
Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean,
                      double beta = 1.0);
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean);

// ---- stochastic ---------------------------------------------------------------------------------
// Inverted dropout: y = x * mask * fl(1/(1-p)). Identity when !training or p == 0.
Tensor dropout(const Tensor& x, double p, bool training, Generator* generator = nullptr);

// ---- indexing and joining -----------------------------------------------------------------------
// weight (num, dim), indices int64 (...) -> (..., dim). The padding_idx row gets no gradient.
Tensor embedding(const Tensor& weight, const Tensor& indices, std::optional<int64_t> padding_idx = std::nullopt);
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim);
Tensor stack(const std::vector<Tensor>& tensors, int64_t dim);

// A growing concatenation along channels, written in place: DenseNet's x = cat({x, new}, 1) chain
// without re-copying the earlier channels at every layer. One (N, capacity, H, W) buffer is made up
// front; append(part) writes part into the next free channels and returns what cat({result(), part}, 1)
// would (same values, same autograd graph), as a leading channel slice of that buffer. Only appends
// are possible, so no earlier result is ever overwritten. conv2d reads such slices in place.
//
// The backward mirrors it: the gradients of all results live in one buffer per backward pass, each
// result's a leading channel slice, each part's the slice the part was written to. conv2d() below
// adds its input gradient straight into that buffer instead of returning a tensor for the engine to
// add to the others (the dense block's per-layer gradient sums).
namespace detail {
struct ConcatGrad;
}
class ChannelConcat {
 public:
  ChannelConcat(const Tensor& first, int64_t capacity);  // first (N, C0, H, W), C0 <= capacity
  Tensor append(const Tensor& part);                     // part (N, g, H, W) -> (N, C + g, H, W)
  Tensor result() const { return result_; }
  int64_t channels() const { return filled_; }
  int64_t capacity() const { return buffer_.size(1); }
  // conv2d(result(), weight, bias, options), the same numbers and graph, except that its backward adds
  // the gradient of result() into the gradient buffer in place (CPU, float; elsewhere it returns it).
  Tensor conv2d(const Tensor& weight, const Tensor& bias = Tensor(), const Conv2dOptions& options = {}) const;

 private:
  Tensor buffer_, result_;
  int64_t filled_ = 0;
  std::shared_ptr<detail::ConcatGrad> grad_;
};

// ---- helpers --------------------------------------------------------------------------------------
// Materialises any view as a new contiguous tensor (no autograd; used by kernels' callers).
Tensor contiguous_copy(const Tensor& x);
// Checks that all tensors are defined and on one device; names the op.
void check_same_device(const char* op, std::initializer_list<const Tensor*> tensors);
void check_same_dtype(const char* op, std::initializer_list<const Tensor*> tensors);

}  // namespace hmer
