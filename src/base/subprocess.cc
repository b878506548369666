#include "base/subprocess.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

extern char** environ;

namespace citadel {

std::string ProcessResult::last_line() const {
  size_t end = output.size();
  while (end > 0) {
    while (end > 0 && (output[end - 1] == '\n' || output[end - 1] == '\r' || output[end - 1] == ' ')) --end;
    size_t start = output.rfind('\n', end == 0 ? 0 : end - 1);
    start = (start == std::string::npos) ? 0 : start + 1;
    // Progress bars use '\r'; keep the last segment.
    size_t cr = output.rfind('\r', end == 0 ? 0 : end - 1);
    if (cr != std::string::npos && cr >= start) start = cr + 1;
    if (end > start) return output.substr(start, end - start);
    end = start;
  }
  return "";
}

bool program_exists(const std::string& name) {
  if (name.find('/') != std::string::npos) return access(name.c_str(), X_OK) == 0;
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  size_t pos = 0;
  while (pos <= p.size()) {
    size_t colon = p.find(':', pos);
    if (colon == std::string::npos) colon = p.size();
    std::string dir = p.substr(pos, colon - pos);
    if (dir.empty()) dir = ".";
    std::string full = std::move(dir);
    full.append("/").append(name);
    struct stat st;
    if (stat(full.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(full.c_str(), X_OK) == 0) return true;
    pos = colon + 1;
  }
  return false;
}

Result<ProcessResult> run_process(const std::vector<std::string>& argv, const ProcessOptions& opts) {
  if (argv.empty()) return InvalidArgument("run_process: empty argv");
  if (!program_exists(argv[0])) return NotFound(argv[0] + ": program not found on PATH");
  std::vector<char*> args;  // [argc + 1] pointers into argv, NULL-terminated
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_store;
  for (char** e = environ; *e; ++e) env_store.emplace_back(*e);
  for (const auto& e : opts.env) env_store.push_back(e);
  std::vector<char*> envp;
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);

  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return IoError(std::string("pipe: ") + std::strerror(errno));
  const pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return IoError(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    const int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    execvpe(args[0], args.data(), envp.data());
    _exit(127);
  }
  close(fds[1]);
  ProcessResult res;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (opts.echo) {
      ssize_t off = 0;
      while (off < n) {
        const ssize_t w = write(STDERR_FILENO, buf + off, static_cast<size_t>(n - off));
        if (w <= 0) break;
        off += w;
      }
    }
    res.output.append(buf, static_cast<size_t>(n));
    if (res.output.size() > opts.capture_limit * 2) {
      res.output.erase(0, res.output.size() - opts.capture_limit);
    }
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return IoError(std::string("waitpid: ") + std::strerror(errno));
  }
  if (WIFEXITED(status)) res.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status)) res.exit_code = 128 + WTERMSIG(status);
  return res;
}

}  // namespace citadel
