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

std::string_view status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: message", or "OK".
  std::string to_string() const;

  // Returns a copy whose message is "<prefix>: <message>"; the code is kept.
  Status with_context(std::string_view prefix) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status ok_status() { return Status(); }

// One constructor per code used in the project: invalid_argument_error("bad {}", x).
#define LORASERVE_STATUS_FACTORY(Name, Code)                                           \
  template <typename... Args>                                                          \
  Status Name(fmt::format_string<Args...> format, Args&&... args) {                    \
    return Status(StatusCode::Code, fmt::format(format, std::forward<Args>(args)...)); \
  }
LORASERVE_STATUS_FACTORY(invalid_argument_error, kInvalidArgument)
LORASERVE_STATUS_FACTORY(not_found_error, kNotFound)
LORASERVE_STATUS_FACTORY(already_exists_error, kAlreadyExists)
LORASERVE_STATUS_FACTORY(permission_denied_error, kPermissionDenied)
LORASERVE_STATUS_FACTORY(resource_exhausted_error, kResourceExhausted)
LORASERVE_STATUS_FACTORY(failed_precondition_error, kFailedPrecondition)
LORASERVE_STATUS_FACTORY(out_of_range_error, kOutOfRange)
LORASERVE_STATUS_FACTORY(unimplemented_error, kUnimplemented)
LORASERVE_STATUS_FACTORY(internal_error, kInternal)
LORASERVE_STATUS_FACTORY(unavailable_error, kUnavailable)
LORASERVE_STATUS_FACTORY(data_loss_error, kDataLoss)
LORASERVE_STATUS_FACTORY(unauthenticated_error, kUnauthenticated)
LORASERVE_STATUS_FACTORY(cancelled_error, kCancelled)
LORASERVE_STATUS_FACTORY(deadline_exceeded_error, kDeadlineExceeded)
#undef LORASERVE_STATUS_FACTORY

// A value of type T, or the Status that says why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
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

  // This result, or its error with "<prefix>: " before the message (the code is kept).
  Result<T> with_context(std::string_view prefix) && {
    if (ok()) return std::move(*this);
    return status().with_context(prefix);
  }

 private:
  std::variant<T, Status> v_;
};

}  // namespace loraserve

#define LS_CONCAT_INNER(a, b) a##b
#define LS_CONCAT(a, b) LS_CONCAT_INNER(a, b)

// Returns from the enclosing function when `expr` (a Status) is not OK.
#define LS_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::loraserve::Status ls_status_ = (expr); \
    if (!ls_status_.ok()) return ls_status_; \
  } while (0)

// `LS_ASSIGN_OR_RETURN(auto x, MakeX());` binds the value or returns the error.
#define LS_ASSIGN_OR_RETURN(lhs, expr) \
  LS_ASSIGN_OR_RETURN_IMPL(LS_CONCAT(ls_result_, __LINE__), lhs, expr)
#define LS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()
