// Errors raised below the boundary. The binding turns them into JS errors;
// kernels assume checked input and only raise for resource failures.
#pragma once
#include <stdexcept>
#include <string>

namespace vlm {

enum class ErrorKind { Type, Range, Generic };

struct Error : std::runtime_error {
  ErrorKind kind;
  Error(ErrorKind k, const std::string& msg) : std::runtime_error(msg), kind(k) {}
};

[[noreturn]] inline void throw_type(const std::string& m) { throw Error(ErrorKind::Type, m); }
[[noreturn]] inline void throw_range(const std::string& m) { throw Error(ErrorKind::Range, m); }
[[noreturn]] inline void throw_error(const std::string& m) { throw Error(ErrorKind::Generic, m); }

}  // namespace vlm
