// A real PostgreSQL server for tests: started once per test process on loopback, stopped and deleted at exit.
//
//   std::string reason;
//   const std::string conninfo = citadel::testing::pg_test_conninfo(&reason);  // a fresh, empty database
//   if (conninfo.empty()) GTEST_SKIP() << reason;
//   auto db = citadel::store::open_database(conninfo);
//
// The server comes from /usr/lib/postgresql/<version>/bin (initdb, pg_ctl). It listens on 127.0.0.1 at a free port
// and on a unix socket in its own temp dir, with trust authentication (user "postgres", no password), fsync off.
// Postgres refuses to run as root, so under root the binaries run as the `postgres` user (setuid in the child).
// When the binaries are missing or the server cannot start, pg_test_conninfo() returns "" and says why.
// Every call creates a new database t_<pid>_<n>, so tests never see each other's tables.
// Thread-safety: pg_test_conninfo() may be called from any thread.
// Implementation inline: CMake globs only *_test.cc into the test binary, and any test file may include this.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

namespace citadel::testing {

namespace pg_fixture_detail {

// Runs argv (absolute program path) with cwd `dir`, output appended to `log`, as `uid`/`gid` when run_as is set.
// Returns the exit status, or -1 when it could not start. Everything the child needs is prepared before fork().
inline int run_program(const std::vector<std::string>& argv, const std::string& dir, const std::string& log,
                       const passwd* run_as) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const uid_t uid = run_as ? run_as->pw_uid : 0;
  const gid_t gid = run_as ? run_as->pw_gid : 0;
  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    const int out = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    const int in = open("/dev/null", O_RDONLY);
    if (in >= 0) dup2(in, STDIN_FILENO);
    if (out >= 0) {
      dup2(out, STDOUT_FILENO);
      dup2(out, STDERR_FILENO);
    }
    if (run_as) {
      if (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(uid) != 0) _exit(126);
    }
    if (chdir(dir.c_str()) != 0) _exit(126);
    execv(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

inline std::string tail_of(const std::string& path, size_t max_chars = 600) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  if (s.size() > max_chars) s = s.substr(s.size() - max_chars);
  return s;
}

// The newest installed PostgreSQL's bin directory, or "".
inline std::string find_bin_dir() {
  glob_t g{};
  std::vector<std::string> dirs;
  if (glob("/usr/lib/postgresql/*/bin/initdb", 0, nullptr, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) dirs.push_back(std::filesystem::path(g.gl_pathv[i]).parent_path());
  }
  globfree(&g);
  if (dirs.empty()) return "";
  // Versions are numeric directory names; compare as numbers so 16 beats 9.6.
  std::sort(dirs.begin(), dirs.end(), [](const std::string& a, const std::string& b) {
    auto ver = [](const std::string& d) { return std::atof(std::filesystem::path(d).parent_path().filename().c_str()); };
    return ver(a) < ver(b);
  });
  return dirs.back();
}

// A port the kernel just handed out on 127.0.0.1 (free at this instant; start() retries if it is taken).
inline int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

class Server {
 public:
  static Server& instance() {
    static Server server;  // started on first use, stopped by the destructor at process exit
    return server;
  }

  std::string new_database(std::string* skip_reason) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!skip_.empty()) {
      if (skip_reason) *skip_reason = skip_;
      return "";
    }
    const std::string name = "t_" + std::to_string(getpid()) + "_" + std::to_string(++n_databases_);
    PGconn* admin = PQconnectdb(conninfo("postgres").c_str());
    std::string err;
    if (PQstatus(admin) != CONNECTION_OK) {
      err = PQerrorMessage(admin);
    } else {
      PGresult* r = PQexec(admin, ("CREATE DATABASE " + name).c_str());
      if (PQresultStatus(r) != PGRES_COMMAND_OK) err = PQresultErrorMessage(r);
      PQclear(r);
    }
    PQfinish(admin);
    if (!err.empty()) {
      if (skip_reason) *skip_reason = "PostgreSQL test server: CREATE DATABASE failed: " + err;
      return "";
    }
    return conninfo(name);
  }

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

 private:
  Server() { skip_ = start(); }
  ~Server() {
    if (started_) {
      run_program({bin_ + "/pg_ctl", "-D", dir_ + "/data", "-m", "fast", "-w", "stop"}, dir_, dir_ + "/ctl.log",
                  run_as_);
    }
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  std::string conninfo(const std::string& db) const {
    return "host=127.0.0.1 port=" + std::to_string(port_) + " user=postgres dbname=" + db + " connect_timeout=10";
  }

  // Returns "" when the server runs, else the reason to skip.
  std::string start() {
    bin_ = find_bin_dir();
    if (bin_.empty()) return "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin";
    if (geteuid() == 0) {
      run_as_ = getpwnam("postgres");
      if (run_as_ == nullptr) return "running as root and there is no `postgres` user to run the test server";
      pw_ = *run_as_;  // getpwnam's storage is static; keep our copy
      run_as_ = &pw_;
    }
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/citadel-pg-XXXXXX";
    if (mkdtemp(templ.data()) == nullptr) return "cannot create a temp dir for PostgreSQL: " + templ;
    dir_ = templ;
    if (run_as_ && chown(dir_.c_str(), run_as_->pw_uid, run_as_->pw_gid) != 0) {
      return "cannot chown " + dir_ + " to postgres";
    }
    const std::string log = dir_ + "/initdb.log";
    const int rc = run_program({bin_ + "/initdb", "-D", dir_ + "/data", "-U", "postgres", "-A", "trust", "-E",
                                "UTF8", "--locale=C", "--no-sync"},
                               dir_, log, run_as_);
    if (rc != 0) return "initdb failed (exit " + std::to_string(rc) + "): " + tail_of(log);
    std::string last_error;
    for (int attempt = 0; attempt < 3; ++attempt) {  // another process may grab the port between probe and bind
      port_ = free_port();
      if (port_ <= 0) return "no free loopback port";
      const std::string opts = "-c listen_addresses=127.0.0.1 -p " + std::to_string(port_) + " -k " + dir_ +
                               " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                               " -c max_connections=200";
      const int st = run_program({bin_ + "/pg_ctl", "-D", dir_ + "/data", "-l", dir_ + "/server.log", "-w", "-t",
                                  "30", "-o", opts, "start"},
                                 dir_, dir_ + "/ctl.log", run_as_);
      if (st == 0) {
        started_ = true;
        return "";
      }
      last_error = "pg_ctl start failed (exit " + std::to_string(st) + "): " + tail_of(dir_ + "/server.log");
    }
    return last_error;
  }

  std::mutex mu_;
  std::string bin_, dir_, skip_;
  passwd pw_{};
  const passwd* run_as_ = nullptr;
  int port_ = 0;
  int n_databases_ = 0;
  bool started_ = false;
};

}  // namespace pg_fixture_detail

// A libpq conninfo ("host=127.0.0.1 port=... user=postgres dbname=t_...") for a new empty database on the shared
// test server, or "" with *skip_reason set when PostgreSQL is unavailable.
inline std::string pg_test_conninfo(std::string* skip_reason) {
  return pg_fixture_detail::Server::instance().new_database(skip_reason);
}

// One test's database on either backend, and a fresh temp directory (*dir; the caller removes it) for its files:
// the SQLite database lives there as state.db; with postgres, a fresh database on the test server. Returns the URL,
// or "" with *skip_reason when PostgreSQL is unavailable (or, with *skip_reason "", when mkdtemp failed).
inline std::string test_database_url(bool postgres, std::string* dir, std::string* skip_reason) {
  std::string templ = (std::filesystem::temp_directory_path() / "citadel-db-XXXXXX").string();
  skip_reason->clear();
  if (mkdtemp(templ.data()) == nullptr) return "";
  *dir = templ;
  return postgres ? pg_test_conninfo(skip_reason) : *dir + "/state.db";
}

}  // namespace citadel::testing
