#pragma once
// Errors raised by the engine. Every check names the op and what it saw, so a user
// who feeds a wrong shape learns which call and which tensor is at fault.
#include <sstream>
#include <stdexcept>
#include <string>

namespace hmer {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <class T, class... Rest>
void append(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  append(os, rest...);
}
}  // namespace detail

template <class... Args>
[[noreturn]] void fail(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  throw Error(os.str());
}

}  // namespace hmer

#define HMER_CHECK(cond, ...)          \
  do {                                 \
    if (!(cond)) ::hmer::fail(__VA_ARGS__); \
  } while (0)
