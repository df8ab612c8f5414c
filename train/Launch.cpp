//===- Launch.cpp - where a rank process sits, and starting local ranks ----===//

#include "train/Launch.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Program.h"

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace kiln::tooling {

namespace {
llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

std::optional<std::string> env(const char *name) {
  const char *v = std::getenv(name);
  if (!v || !*v)
    return std::nullopt;
  return std::string(v);
}

/// Reads the integer variable `name` into `out` when it is set.
llvm::Error readInt(const char *name, int64_t &out) {
  auto v = env(name);
  if (!v)
    return llvm::Error::success();
  if (llvm::StringRef(*v).getAsInteger(10, out) || out < 0)
    return error(llvm::formatv("{0}='{1}' is not a non-negative integer", name, *v));
  return llvm::Error::success();
}

/// A port nobody listens on now (rank 0 binds it a moment later).
llvm::Expected<int> freePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return error(std::string("cannot open a socket: ") + std::strerror(errno));
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &length) != 0) {
    ::close(fd);
    return error(std::string("cannot find a free port: ") + std::strerror(errno));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

volatile sig_atomic_t forwardTo = 0; // the ranks' process group
volatile sig_atomic_t forwarded = 0;

void forwardSignal(int signal) {
  if (forwardTo > 0 && !forwarded) {
    forwarded = 1;
    ::kill(-forwardTo, signal);
  }
}

std::string describeStatus(int status) {
  if (WIFSIGNALED(status))
    return llvm::formatv("was killed by signal {0} ({1})", WTERMSIG(status),
                         ::strsignal(WTERMSIG(status)));
  return llvm::formatv("exited with code {0}", WEXITSTATUS(status));
}
} // namespace

llvm::Expected<RankEnvironment> rankEnvironment() {
  RankEnvironment e;
  // The first launcher whose variables are set, torchrun's (and kiln's own)
  // first: mpirun and srun export theirs into whatever they start.
  struct Source {
    const char *launcher, *rank, *size, *localRank, *localSize;
  };
  // Slurm: the step's variables, which srun sets for what it starts (an
  // sbatch script itself has SLURM_NTASKS but is no rank).
  static const Source sources[] = {
      {"torchrun-style variables", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"},
      {"Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
       "OMPI_COMM_WORLD_LOCAL_SIZE"},
      {"Slurm", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", nullptr},
  };
  const Source *found = nullptr;
  for (const Source &s : sources)
    if (env(s.size)) {
      found = &s;
      break;
    }
  if (!found)
    return e;
  if (llvm::Error err = readInt(found->size, e.size))
    return std::move(err);
  if (e.size <= 1)
    return RankEnvironment();
  if (!env(found->rank))
    return error(llvm::formatv("{0} is {1} but {2} is not set", found->size, e.size,
                               found->rank));
  if (llvm::Error err = readInt(found->rank, e.rank))
    return std::move(err);
  e.localRank = e.rank;
  if (llvm::Error err = readInt(found->localRank, e.localRank))
    return std::move(err);
  // One host, or how many ranks on this one. Unknown: assume several hosts
  // (rank 0's address must then be given).
  bool oneHost = false;
  if (found->localSize) {
    int64_t local = 0;
    if (llvm::Error err = readInt(found->localSize, local))
      return std::move(err);
    oneHost = local == e.size;
    e.localSize = local > 0 ? local : 1;
  } else {
    int64_t nodes = 0;
    if (llvm::Error err = readInt("SLURM_STEP_NUM_NODES", nodes))
      return std::move(err);
    oneHost = nodes == 1;
    e.localSize = oneHost ? e.size : 1;
  }
  if (e.rank >= e.size)
    return error(llvm::formatv("{0} = {1} is not below {2} = {3}", found->rank, e.rank,
                               found->size, e.size));
  e.launcher = found->launcher;
  e.byKiln = env("KILN_RANKS_LAUNCHER").has_value();
  // The job's id from the launcher that started the ranks (mpirun inside
  // an sbatch script also sees Slurm's variables, not the same on every
  // node).
  llvm::StringRef launcher = found->launcher;
  if (launcher == "Open MPI")
    e.job = env("PMIX_NAMESPACE").value_or(env("OMPI_MCA_orte_ess_jobid").value_or(""));
  else if (launcher == "Slurm")
    e.job = env("SLURM_JOB_ID") ? *env("SLURM_JOB_ID") + "." + env("SLURM_STEP_ID").value_or("0")
                                : "";
  else
    e.job = env("KILN_JOB").value_or(env("TORCHELASTIC_RUN_ID").value_or(""));
  if (auto addr = env("MASTER_ADDR"))
    e.host = *addr;
  if (!oneHost && (!env("MASTER_ADDR") || !env("MASTER_PORT")))
    return error(llvm::formatv("{0} ranks over several hosts ({1}): set MASTER_ADDR to rank 0's "
                               "host and MASTER_PORT to a free port on it",
                               e.size, e.launcher));
  if (auto port = env("MASTER_PORT")) {
    int64_t p = 0;
    if (llvm::StringRef(*port).getAsInteger(10, p) || p <= 0 || p > 65535)
      return error("MASTER_PORT='" + *port + "' is not a TCP port");
    e.port = static_cast<int>(p);
  }
  return e;
}

llvm::Expected<int> launchLocalRanks(int64_t ranks, llvm::ArrayRef<std::string> args,
                                     llvm::raw_ostream &err, double graceSeconds,
                                     llvm::StringRef who) {
  std::string exe = llvm::sys::fs::getMainExecutable(nullptr, nullptr);
  if (exe.empty())
    return error("cannot find this program's executable to start the ranks");
  auto port = freePort();
  if (!port)
    return port.takeError();
  std::vector<std::string> argStorage(args.begin(), args.end());
  std::vector<char *> argv;
  for (std::string &a : argStorage)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<pid_t> pids;
  pid_t groupId = 0;
  const pid_t launcher = ::getpid();
  // This launch's id: the launcher's process and the time it started.
  std::string job = llvm::formatv(
      "kiln-{0}-{1}", launcher,
      std::chrono::duration_cast<std::chrono::microseconds>(
          std::chrono::system_clock::now().time_since_epoch())
          .count());
  for (int64_t r = 0; r < ranks; ++r) {
    // The environment, prepared before fork(): the child only calls
    // async-signal-safe functions.
    std::vector<std::string> vars = {
        "RANK=" + std::to_string(r),          "WORLD_SIZE=" + std::to_string(ranks),
        "LOCAL_RANK=" + std::to_string(r),    "LOCAL_WORLD_SIZE=" + std::to_string(ranks),
        "MASTER_ADDR=127.0.0.1",              "MASTER_PORT=" + std::to_string(*port),
        "KILN_RANKS_LAUNCHER=1",              "KILN_JOB=" + job};
    std::vector<char *> envp;
    for (char **e = environ; *e; ++e) {
      llvm::StringRef name = llvm::StringRef(*e).split('=').first;
      if (!llvm::any_of(vars, [&](const std::string &v) { return llvm::StringRef(v).split('=').first == name; }))
        envp.push_back(*e);
    }
    for (std::string &v : vars)
      envp.push_back(v.data());
    envp.push_back(nullptr);
    err.flush();
    llvm::outs().flush();
    pid_t pid = ::fork();
    if (pid < 0) {
      std::string why = std::strerror(errno);
      if (groupId > 0)
        ::kill(-groupId, SIGKILL);
      for (pid_t started : pids)
        ::waitpid(started, nullptr, 0);
      return error("cannot start rank " + std::to_string(r) + ": " + why);
    }
    if (pid == 0) {
      // The ranks form their own process group, so a terminal's Ctrl-C
      // reaches them once, through this launcher, not twice; and they end
      // when the launcher does, however it ends.
      ::setpgid(0, groupId);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != launcher)
        ::_exit(1);
      if (r != 0) {
        int null = ::open("/dev/null", O_WRONLY);
        if (null >= 0)
          ::dup2(null, 1);
      }
      ::execve(exe.c_str(), argv.data(), envp.data());
      static const char message[] = "kiln: cannot start a rank: execve failed\n";
      (void)!::write(2, message, sizeof message - 1);
      ::_exit(127);
    }
    if (groupId == 0)
      groupId = pid;
    ::setpgid(pid, groupId); // also here: whichever runs first
    pids.push_back(pid);
  }
  forwardTo = groupId;
  struct sigaction action = {}, previous[3];
  action.sa_handler = forwardSignal;
  sigemptyset(&action.sa_mask);
  const int signals[] = {SIGINT, SIGTERM, SIGHUP};
  for (int i = 0; i < 3; ++i)
    sigaction(signals[i], &action, &previous[i]);

  std::vector<std::optional<int>> status(pids.size());
  std::optional<size_t> firstFailure;
  std::optional<std::chrono::steady_clock::time_point> killAt;
  bool killed = false;
  size_t running = pids.size();
  while (running > 0) {
    int s = 0;
    pid_t pid = ::waitpid(-1, &s, WNOHANG);
    if (pid > 0) {
      for (size_t r = 0; r < pids.size(); ++r)
        if (pids[r] == pid) {
          status[r] = s;
          --running;
          bool ok = WIFEXITED(s) && (WEXITSTATUS(s) == 0 || WEXITSTATUS(s) >= 128);
          if (!ok && !firstFailure) {
            firstFailure = r;
            killAt = std::chrono::steady_clock::now() +
                     std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                         std::chrono::duration<double>(graceSeconds));
          }
        }
      continue;
    }
    if (pid < 0 && errno != EINTR)
      break;
    if (killAt && !killed && std::chrono::steady_clock::now() > *killAt) {
      ::kill(-groupId, SIGKILL);
      killed = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  forwardTo = 0;
  for (int i = 0; i < 3; ++i)
    sigaction(signals[i], &previous[i], nullptr);

  if (!firstFailure)
    return status[0] && WIFEXITED(*status[0]) ? WEXITSTATUS(*status[0]) : 1;
  // The exit code: a rank killed by a signal (the likely cause: the others
  // end because it left), else the lowest rank that failed — in rank order,
  // whatever order they ended in.
  std::optional<int> code;
  for (size_t r = 0; r < pids.size(); ++r) {
    if (!status[r])
      continue;
    int s = *status[r];
    if (WIFEXITED(s) && WEXITSTATUS(s) == 0)
      continue;
    err << llvm::formatv("{3}: rank {0} (pid {1}) {2}\n", r, pids[r], describeStatus(s), who);
    if (WIFSIGNALED(s) && !killed && (!code || *code < 128))
      code = 128 + WTERMSIG(s);
    else if (!code)
      code = WIFEXITED(s) ? std::max(1, WEXITSTATUS(s)) : 128 + WTERMSIG(s);
  }
  if (killed)
    err << llvm::formatv("{2}: the ranks still running {0:f0} s after rank {1} failed "
                         "were killed\n",
                         graceSeconds, *firstFailure, who);
  return code.value_or(1);
}

} // namespace kiln::tooling
