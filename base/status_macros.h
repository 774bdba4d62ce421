#ifndef DCASGD_BASE_STATUS_MACROS_H_
#define DCASGD_BASE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// RETURN_IF_ERROR(expr): returns the status of `expr` from the enclosing
// function when it is not OK.
#define DCASGD_CONCAT_INNER_(a, b) a##b
#define DCASGD_CONCAT_(a, b) DCASGD_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr) \
  DCASGD_RETURN_IF_ERROR_IMPL_(DCASGD_CONCAT_(dcasgd_status_, __LINE__), expr)

// The variable name carries the line, so nested uses (e.g. inside a lambda
// in another RETURN_IF_ERROR) do not shadow each other.
#define DCASGD_RETURN_IF_ERROR_IMPL_(status, expr) \
  do {                                             \
    const absl::Status status = (expr);            \
    if (!status.ok()) return status;               \
  } while (0)

// ASSIGN_OR_RETURN(lhs, expr): evaluates the StatusOr `expr`; on error returns
// its status, otherwise assigns (or declares) `lhs` from its value.
#define ASSIGN_OR_RETURN(lhs, expr) \
  DCASGD_ASSIGN_OR_RETURN_IMPL_(DCASGD_CONCAT_(dcasgd_sor_, __LINE__), lhs, expr)

#define DCASGD_ASSIGN_OR_RETURN_IMPL_(sor, lhs, expr) \
  auto sor = (expr);                                  \
  if (!sor.ok()) return std::move(sor).status();      \
  lhs = std::move(sor).value()

#endif  // DCASGD_BASE_STATUS_MACROS_H_
