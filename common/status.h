// Status and Result<T>: how errors cross module borders in loraserve (never exceptions).
// A Status is a code (the gRPC canonical codes, so the server maps them one to one) and a
// message a person can act on. Thread-compatible value types.
#pragma once

#include <fmt/format.h>

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace loraserve {

enum class StatusCode {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: message", or "OK".
  std::string ToString() const;

  // Returns a copy whose message is "<prefix>: <message>"; the code is kept.
  Status WithContext(std::string_view prefix) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// One constructor per code used in the project: InvalidArgument("bad {}", x).
#define LORASERVE_STATUS_FACTORY(Name, Code)                                     \
  template <typename... Args>                                                    \
  Status Name(fmt::format_string<Args...> format, Args&&... args) {              \
    return Status(StatusCode::Code, fmt::format(format, std::forward<Args>(args)...)); \
  }
LORASERVE_STATUS_FACTORY(InvalidArgument, kInvalidArgument)
LORASERVE_STATUS_FACTORY(NotFound, kNotFound)
LORASERVE_STATUS_FACTORY(AlreadyExists, kAlreadyExists)
LORASERVE_STATUS_FACTORY(PermissionDenied, kPermissionDenied)
LORASERVE_STATUS_FACTORY(ResourceExhausted, kResourceExhausted)
LORASERVE_STATUS_FACTORY(FailedPrecondition, kFailedPrecondition)
LORASERVE_STATUS_FACTORY(OutOfRange, kOutOfRange)
LORASERVE_STATUS_FACTORY(Unimplemented, kUnimplemented)
LORASERVE_STATUS_FACTORY(Internal, kInternal)
LORASERVE_STATUS_FACTORY(Unavailable, kUnavailable)
LORASERVE_STATUS_FACTORY(DataLoss, kDataLoss)
LORASERVE_STATUS_FACTORY(Unauthenticated, kUnauthenticated)
LORASERVE_STATUS_FACTORY(Cancelled, kCancelled)
LORASERVE_STATUS_FACTORY(DeadlineExceeded, kDeadlineExceeded)
#undef LORASERVE_STATUS_FACTORY

// A value of type T, or the Status that says why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(v_).ok() && "Result built from an OK status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  // REQUIRES: ok()
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace loraserve

#define LS_CONCAT_INNER(a, b) a##b
#define LS_CONCAT(a, b) LS_CONCAT_INNER(a, b)

// Returns from the enclosing function when `expr` (a Status) is not OK.
#define LS_RETURN_IF_ERROR(expr)                       \
  do {                                                 \
    ::loraserve::Status ls_status_ = (expr);           \
    if (!ls_status_.ok()) return ls_status_;           \
  } while (0)

// `LS_ASSIGN_OR_RETURN(auto x, MakeX());` binds the value or returns the error.
#define LS_ASSIGN_OR_RETURN(lhs, expr) \
  LS_ASSIGN_OR_RETURN_IMPL(LS_CONCAT(ls_result_, __LINE__), lhs, expr)
#define LS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()
