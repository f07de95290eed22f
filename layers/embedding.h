#pragma once
// Embedding (torch.nn.Embedding): a (num_embeddings, embedding_dim) lookup table.
#include <optional>

#include "layers/module.h"

namespace hmer {

struct EmbeddingOptions {
  EmbeddingOptions(int64_t num_embeddings, int64_t embedding_dim)
      : num_embeddings_(num_embeddings), embedding_dim_(embedding_dim) {}
  HMER_ARG(int64_t, num_embeddings);
  HMER_ARG(int64_t, embedding_dim);
  // The row that is zero after init and never receives a gradient; negative counts from the end.
  HMER_ARG(std::optional<int64_t>, padding_idx) = std::nullopt;
};

class Embedding : public UnaryModule {
 public:
  explicit Embedding(const EmbeddingOptions& options, Generator* gen = nullptr);
  Embedding(int64_t num_embeddings, int64_t embedding_dim, std::optional<int64_t> padding_idx = std::nullopt,
            Generator* gen = nullptr)
      : Embedding(EmbeddingOptions(num_embeddings, embedding_dim).padding_idx(padding_idx), gen) {}

  Tensor forward(const Tensor& indices) override;  // int64 (...) -> (..., dim)
  void reset_parameters(InitPreset preset, Generator& gen) override;
  std::string extra_repr() const override;

  const EmbeddingOptions& options() const { return options_; }
  std::optional<int64_t> padding_idx() const { return padding_idx_; }  // normalised to [0, num)
  Tensor& weight() { return weight_; }  // (num, dim)

 private:
  EmbeddingOptions options_;
  std::optional<int64_t> padding_idx_;
  Tensor weight_;
};

}  // namespace hmer
