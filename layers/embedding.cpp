#include "layers/embedding.h"

#include "core/autograd.h"
#include "core/ops.h"
#include "layers/init.h"

namespace hmer {

Embedding::Embedding(const EmbeddingOptions& options, Generator* gen) : UnaryModule("Embedding"), options_(options) {
  const int64_t num = options.num_embeddings(), dim = options.embedding_dim();
  HMER_CHECK(num > 0 && dim > 0, "Embedding: num_embeddings and embedding_dim must be positive, got ", num, " and ",
             dim);
  if (options.padding_idx()) {
    int64_t p = *options.padding_idx();
    HMER_CHECK(p >= -num && p < num, "Embedding: padding_idx ", p, " must be within num_embeddings ", num);
    padding_idx_ = p < 0 ? p + num : p;
  }
  weight_ = register_parameter("weight", Tensor::empty({num, dim}));
  reset_parameters(InitPreset::Torch, gen ? *gen : default_generator());
}

Tensor Embedding::forward(const Tensor& indices) { return embedding(weight_, indices, padding_idx_); }

void Embedding::reset_parameters(InitPreset preset, Generator& gen) {
  NoGradGuard no_grad;
  switch (preset) {
    case InitPreset::Torch:
      normal_(weight_, 0.0, 1.0, gen);
      break;
    case InitPreset::Paddle: {
      // Default ParamAttr: Xavier uniform with Paddle fans of [num, dim].
      const double a = xavier_uniform_bound(paddle_fans(weight_.shape()));
      uniform_(weight_, -a, a, gen);
      break;
    }
    case InitPreset::Keras:
      uniform_(weight_, -0.05, 0.05, gen);
      break;
  }
  // torch and Paddle zero the padding row; Keras has no padding row, but the row means "no token"
  // here whatever the preset, so it starts at zero too.
  if (padding_idx_) weight_.detach().select(0, *padding_idx_).fill_(0.0);
}

std::string Embedding::extra_repr() const {
  std::string s = std::to_string(options_.num_embeddings()) + ", " + std::to_string(options_.embedding_dim());
  if (padding_idx_) s += ", padding_idx=" + std::to_string(*padding_idx_);
  return s;
}

}  // namespace hmer
