#include "layers/dropout.h"

#include <sstream>

#include "core/ops.h"

namespace hmer {

Dropout::Dropout(double p, Generator* gen) : UnaryModule("Dropout"), p_(p), gen_(gen) {
  HMER_CHECK(p >= 0.0 && p <= 1.0, "Dropout: probability has to be between 0 and 1, but got ", p);
}

Tensor Dropout::forward(const Tensor& x) { return dropout(x, p_, is_training(), gen_); }

std::string Dropout::extra_repr() const {
  std::ostringstream os;
  os << "p=" << p_;
  return os.str();
}

}  // namespace hmer
