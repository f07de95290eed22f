#include "layers/pool.h"

#include <sstream>

namespace hmer {


namespace {

Pool2dOptions make_pool_options(const char* layer, Pair kernel, Pair stride, Pair padding, bool ceil_mode) {
  HMER_CHECK(kernel[0] > 0 && kernel[1] > 0, layer, ": kernel_size must be positive, got ", pair_str(kernel));
  HMER_CHECK(stride[0] >= 0 && stride[1] >= 0, layer, ": stride must be positive (or 0 for kernel_size), got ",
             pair_str(stride));
  // PyTorch: "pad should be at most half of effective kernel size".
  HMER_CHECK(padding[0] >= 0 && padding[1] >= 0 && 2 * padding[0] <= kernel[0] && 2 * padding[1] <= kernel[1],
             layer, ": padding ", pair_str(padding), " must be non-negative and at most half of kernel_size ",
             pair_str(kernel));
  Pool2dOptions o;
  o.kernel = kernel;
  o.stride = {stride[0] == 0 ? kernel[0] : stride[0], stride[1] == 0 ? kernel[1] : stride[1]};
  o.padding = padding;
  o.ceil_mode = ceil_mode;
  return o;
}

std::string pool_repr(const Pool2dOptions& o) {
  return "kernel_size=" + pair_str(o.kernel) + ", stride=" + pair_str(o.stride) + ", padding=" + pair_str(o.padding) +
         ", ceil_mode=" + (o.ceil_mode ? "True" : "False");
}
}  // namespace

MaxPool2d::MaxPool2d(const MaxPool2dOptions& options)
    : UnaryModule("MaxPool2d"),
      opts_(make_pool_options("MaxPool2d", options.kernel_size(), options.stride(), options.padding(),
                              options.ceil_mode())) {}

Tensor MaxPool2d::forward(const Tensor& x) { return max_pool2d(x, opts_); }

std::string MaxPool2d::extra_repr() const { return pool_repr(opts_); }

AvgPool2d::AvgPool2d(const AvgPool2dOptions& options)
    : UnaryModule("AvgPool2d"),
      opts_(make_pool_options("AvgPool2d", options.kernel_size(), options.stride(), options.padding(),
                              options.ceil_mode())) {
  opts_.count_include_pad = options.count_include_pad();
}

Tensor AvgPool2d::forward(const Tensor& x) { return avg_pool2d(x, opts_); }

std::string AvgPool2d::extra_repr() const {
  return pool_repr(opts_) + ", count_include_pad=" + (opts_.count_include_pad ? "True" : "False");
}

}  // namespace hmer
