#include "kernels/cpu/reduce.h"

#include <cstring>

#include "kernels/cpu/parallel.h"

namespace hmer::cpu {

void sum_rows(const Tensor& x, const Tensor& out) {
  const int64_t R = x.size(0), C = x.size(1);
  HMER_DISPATCH_FLOATING(x.dtype(), "sum", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(C, 1));
    if (R >= 2 || C < kElementwiseGrain) {
      parallel_for(R, grain, [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
          const scalar_t* row = xp + r * C;
          double acc = 0.0;
          for (int64_t c = 0; c < C; ++c) acc += static_cast<double>(row[c]);
          op[r] = static_cast<scalar_t>(acc);
        }
      });
    } else {
      // One long row (a full reduction): split the row, combine the partial sums in order.
      const int nt = num_threads();
      std::vector<double> partial(nt, 0.0);
      const int64_t chunk = (C + nt - 1) / nt;
      parallel_for(nt, 1, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
          double acc = 0.0;
          const int64_t lo = t * chunk, hi = std::min<int64_t>(C, lo + chunk);
          for (int64_t c = lo; c < hi; ++c) acc += static_cast<double>(xp[c]);
          partial[t] = acc;
        }
      });
      double acc = 0.0;
      for (double p : partial) acc += p;
      op[0] = static_cast<scalar_t>(acc);
    }
  });
}

void max_rows(const Tensor& x, const Tensor& values, const Tensor& indices) {
  const int64_t R = x.size(0), C = x.size(1);
  HMER_DISPATCH_FLOATING(x.dtype(), "max", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* vp = values.data_ptr<scalar_t>();
    int64_t* ip = indices.data_ptr<int64_t>();
    parallel_for(R, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(C, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const scalar_t* row = xp + r * C;
        int64_t best = 0;
        scalar_t bv = row[0];
        for (int64_t c = 1; c < C; ++c) {
          // NaN propagates as the maximum, as in torch
          if (row[c] > bv || (row[c] != row[c] && bv == bv)) {
            bv = row[c];
            best = c;
          }
        }
        vp[r] = bv;
        ip[r] = best;
      }
    });
  });
}

void max_rows_backward(const Tensor& g, const Tensor& indices, const Tensor& gx) {
  const int64_t R = gx.size(0), C = gx.size(1);
  HMER_DISPATCH_FLOATING(g.dtype(), "max_backward", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const int64_t* ip = indices.data_ptr<int64_t>();
    scalar_t* op = gx.data_ptr<scalar_t>();
    std::memset(op, 0, sizeof(scalar_t) * R * C);
    for (int64_t r = 0; r < R; ++r) op[r * C + ip[r]] = gp[r];
  });
}

}  // namespace hmer::cpu
