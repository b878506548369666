// Internal helpers of the store backends: SQL text handling shared by SQLite, PostgreSQL and migrate().
// Not part of the public store interface (callers include store/database.h only).
#pragma once

#include <string>
#include <vector>

namespace citadel::store::internal {

// The statement's first words for error messages (never parameter values: those travel separately).
std::string sql_head(const std::string& sql);

// Rewrites `?` placeholders to $1..$n, leaving those inside '...' / "..." literals and -- comments untouched.
// Sets *n_params to the number of placeholders rewritten.
std::string rewrite_placeholders(const std::string& sql, int* n_params);

// Splits a script on ';' outside quotes and -- comments; drops empty (whitespace or comment only) statements.
std::vector<std::string> split_statements(const std::string& script);

}  // namespace citadel::store::internal
