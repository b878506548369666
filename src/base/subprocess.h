// Runs a program with an argv vector (fork + execvp, no shell, so no injection through arguments).
// Thread-safety: run_process() may be called from any thread; it blocks until the child exits.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace citadel {

struct ProcessOptions {
  bool echo = false;            // forward the child's output live to our stderr while capturing it
  size_t capture_limit = 64 << 10;  // keep at most the last N bytes of combined stdout+stderr
  std::vector<std::string> env; // extra "KEY=VALUE" entries added to the inherited environment
};

struct ProcessResult {
  int exit_code = -1;   // exit status, or 128+signal when killed by a signal
  std::string output;   // tail of combined stdout+stderr
  // The last non-empty line of output (for one-line error messages).
  std::string last_line() const;
};

// Returns NotFound when the program cannot be executed (not on PATH), else the exit status and output.
Result<ProcessResult> run_process(const std::vector<std::string>& argv, const ProcessOptions& opts = {});

// True when `name` resolves to an executable on $PATH (or is an executable path).
bool program_exists(const std::string& name);

}  // namespace citadel
