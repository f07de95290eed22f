// cat/stack: copies into slices of one output (device-agnostic: uses copy_), backward narrows;
// ChannelConcat: the same along channels, appended in place into one buffer.
#include "core/autograd.h"
#include "core/ops.h"
#include "core/ops_detail.h"

namespace hmer {

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
  HMER_CHECK(!tensors.empty(), "cat: expected a non-empty list of tensors");
  const Tensor& first = tensors[0];
  HMER_CHECK(first.defined(), "cat: tensor 0 is undefined");
  const int64_t d = wrap_dim(dim, first.dim(), "cat");
  Shape out_shape = first.shape();
  out_shape[d] = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    HMER_CHECK(t.defined(), "cat: tensor ", i, " is undefined");
    HMER_CHECK(t.dim() == first.dim(), "cat: tensor ", i, " has ", t.dim(), " dims, tensor 0 has ", first.dim());
    HMER_CHECK(t.dtype() == first.dtype() && t.device() == first.device(), "cat: tensor ", i, " is ", t.str(),
               ", tensor 0 is ", first.str());
    for (int64_t k = 0; k < t.dim(); ++k)
      HMER_CHECK(k == d || t.size(k) == first.size(k), "cat: tensor ", i, " has shape ", shape_str(t.shape()),
                 ", expected ", shape_str(first.shape()), " except in dim ", d);
    out_shape[d] += t.size(d);
  }
  Tensor out = Tensor::empty(out_shape, first.dtype(), first.device());
  std::vector<int64_t> sizes;
  int64_t pos = 0;
  for (const Tensor& t : tensors) {
    out.narrow(d, pos, t.size(d)).copy_(t);
    sizes.push_back(t.size(d));
    pos += t.size(d);
  }
  return record_fn(out, "CatBackward", tensors, [d, sizes](const Tensor& g) {
    std::vector<Tensor> grads;
    int64_t p = 0;
    for (int64_t s : sizes) {
      grads.push_back(g.narrow(d, p, s));
      p += s;
    }
    return grads;
  });
}

Tensor stack(const std::vector<Tensor>& tensors, int64_t dim) {
  HMER_CHECK(!tensors.empty(), "stack: expected a non-empty list of tensors");
  const int64_t d = wrap_dim(dim, tensors[0].dim() + 1, "stack");
  std::vector<Tensor> parts;
  parts.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    HMER_CHECK(tensors[i].defined() && tensors[i].shape() == tensors[0].shape(), "stack: tensor ", i, " has shape ",
               tensors[i].defined() ? shape_str(tensors[i].shape()) : "undefined", ", expected ",
               shape_str(tensors[0].shape()));
    parts.push_back(tensors[i].unsqueeze(d));
  }
  return cat(parts, d);
}

namespace {

void check_channel_part(const char* what, const Tensor& t) {
  HMER_CHECK(t.defined(), "ChannelConcat: ", what, " is undefined");
  HMER_CHECK(t.dim() == 4, "ChannelConcat: ", what, " must be (N, C, H, W), got ", shape_str(t.shape()));
}

}  // namespace

namespace detail {

Tensor ConcatGrad::current() const { return buffer.defined() && pass == backward_pass_id() ? buffer : Tensor(); }

Tensor ConcatGrad::adopt(const Tensor& grad) {
  const int64_t C = grad.size(1);
  Tensor now = current();
  if (now.defined() && now.size(1) >= C && now.dtype() == grad.dtype() && now.device() == grad.device()) {
    Tensor prefix = now.narrow(1, 0, C);
    const bool same_view = grad.storage() == prefix.storage() && grad.offset() == prefix.offset() &&
                           grad.shape() == prefix.shape() && grad.strides() == prefix.strides();
    if (!same_view) prefix.copy_(grad);
    return prefix;
  }
  // The first gradient of the pass (the block output's, a fresh tensor from its consumer) becomes the
  // buffer itself when nothing else can see it: a copy would hold a second block-wide gradient
  // while the block's activations are all still alive, the backward's peak.
  const bool sole_owner = grad.impl_ptr().use_count() == 1 && grad.storage().use_count() == 1;
  if (sole_owner && grad.is_contiguous() && grad.offset() == 0) {
    buffer = grad;
  } else {
    buffer = Tensor::empty(grad.shape(), grad.dtype(), grad.device());
    buffer.copy_(grad);
  }
  pass = backward_pass_id();
  return buffer;
}

}  // namespace detail

ChannelConcat::ChannelConcat(const Tensor& first, int64_t capacity) {
  check_channel_part("the first tensor", first);
  HMER_CHECK(capacity >= first.size(1), "ChannelConcat: capacity ", capacity, " is below the first tensor's ",
             first.size(1), " channels");
  buffer_ = Tensor::empty({first.size(0), capacity, first.size(2), first.size(3)}, first.dtype(), first.device());
  filled_ = first.size(1);
  result_ = buffer_.narrow(1, 0, filled_);
  result_.copy_(first);
  grad_ = std::make_shared<detail::ConcatGrad>();
  // The first part is the last reader of the buffer in a backward pass: whatever reaches it already
  // holds every in-place contribution, so it passes on as it is.
  result_ = record_fn(result_, "CatBackward", {first}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
}

Tensor ChannelConcat::append(const Tensor& part) {
  check_channel_part("the appended tensor", part);
  HMER_CHECK(part.size(0) == buffer_.size(0) && part.size(2) == buffer_.size(2) && part.size(3) == buffer_.size(3),
             "ChannelConcat: appended tensor ", shape_str(part.shape()), " does not match the buffer ",
             shape_str(buffer_.shape()), " except in channels");
  HMER_CHECK(part.dtype() == buffer_.dtype() && part.device() == buffer_.device(), "ChannelConcat: appended tensor is ",
             part.str(), ", the buffer ", buffer_.str());
  const int64_t g = part.size(1);
  HMER_CHECK(filled_ + g <= capacity(), "ChannelConcat: appending ", g, " channels to ", filled_,
             " overflows the capacity of ", capacity());
  // Channels [filled_, filled_ + g) belong to no earlier result, so writing them alters nothing saved.
  buffer_.narrow(1, filled_, g).copy_(part);
  const int64_t before = filled_;
  filled_ += g;
  Tensor grown = buffer_.narrow(1, 0, filled_);
  result_ = record_fn(grown, "CatBackward", {result_, part}, [state = grad_, before, g](const Tensor& grad) {
    const Tensor all = state->adopt(grad);
    return std::vector<Tensor>{all.narrow(1, 0, before), all.narrow(1, before, g)};
  });
  return result_;
}

}  // namespace hmer
