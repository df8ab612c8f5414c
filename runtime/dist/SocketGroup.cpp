//===- SocketGroup.cpp - the ranks of a mesh as processes, over TCP --------===//
//
// The wire format: a message is a fixed header (magic, kind, sequence number,
// sender's rank, dtype, dimensions, text and data lengths), then the
// dimensions, the text and the tensor's bytes as the host stores them (the
// ranks run one binary on one kind of host). A collective's text names it
// ("all_reduce over dp"), so rank 0 can tell ranks that run different
// programs apart from ranks that are merely slow.
//
//===----------------------------------------------------------------------===//

#include "runtime/dist/SocketGroup.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <chrono>
#include <cstring>
#include <optional>
#include <thread>

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace kiln::dist {

namespace {
using Clock = std::chrono::steady_clock;
using cpu::CollectiveKind;
using cpu::HostTensor;

constexpr uint32_t kMagic = 0x4e4c494b; // "KILN" in memory order

enum class Kind : uint32_t { Hello = 1, Contribute, Result, Abort };

struct Header {
  uint32_t magic = kMagic;
  uint32_t kind = 0;
  uint64_t sequence = 0;
  int64_t rank = 0;
  int32_t dtype = -1; ///< -1: no tensor
  int32_t ndim = 0;
  uint64_t textBytes = 0, dataBytes = 0;
};

struct Message {
  Kind kind = Kind::Hello;
  uint64_t sequence = 0;
  int64_t rank = 0;
  std::string text;
  std::optional<HostTensor> tensor;
};

/// How a receive ended.
enum class Status { Ok, Closed, TimedOut, Failed };

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

int millisecondsLeft(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, 1 << 30));
}

/// Waits until `fd` is ready for `events`; false when the deadline passed.
bool waitFor(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, millisecondsLeft(deadline));
    if (n > 0)
      return true;
    if (n == 0)
      return false;
    if (errno != EINTR)
      return true; // the read or write that follows reports it
  }
}

Status sendAll(int fd, const void *data, size_t size, Clock::time_point deadline,
               std::string &why) {
  const char *p = static_cast<const char *>(data);
  while (size > 0) {
    if (!waitFor(fd, POLLOUT, deadline))
      return Status::TimedOut;
    ssize_t n = ::send(fd, p, size, MSG_NOSIGNAL);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (n < 0) {
      why = std::strerror(errno);
      return errno == EPIPE || errno == ECONNRESET ? Status::Closed : Status::Failed;
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return Status::Ok;
}

Status recvAll(int fd, void *data, size_t size, Clock::time_point deadline, std::string &why) {
  char *p = static_cast<char *>(data);
  while (size > 0) {
    if (!waitFor(fd, POLLIN, deadline))
      return Status::TimedOut;
    ssize_t n = ::recv(fd, p, size, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (n < 0) {
      why = std::strerror(errno);
      return errno == ECONNRESET ? Status::Closed : Status::Failed;
    }
    if (n == 0)
      return Status::Closed;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return Status::Ok;
}

Status sendMessage(int fd, const Message &m, Clock::time_point deadline, std::string &why) {
  Header h;
  h.kind = static_cast<uint32_t>(m.kind);
  h.sequence = m.sequence;
  h.rank = m.rank;
  h.textBytes = m.text.size();
  if (m.tensor) {
    h.dtype = static_cast<int32_t>(m.tensor->dtype());
    h.ndim = static_cast<int32_t>(m.tensor->rank());
    h.dataBytes = static_cast<uint64_t>(m.tensor->numel()) * cpu::storageSize(m.tensor->dtype());
  }
  std::string head(reinterpret_cast<const char *>(&h), sizeof h);
  if (m.tensor)
    head.append(reinterpret_cast<const char *>(m.tensor->shape().data()),
                m.tensor->shape().size() * sizeof(int64_t));
  head += m.text;
  Status s = sendAll(fd, head.data(), head.size(), deadline, why);
  if (s == Status::Ok && h.dataBytes > 0)
    s = sendAll(fd, m.tensor->raw(), h.dataBytes, deadline, why);
  return s;
}

Status recvMessage(int fd, Message &m, Clock::time_point deadline, std::string &why) {
  Header h;
  if (Status s = recvAll(fd, &h, sizeof h, deadline, why); s != Status::Ok)
    return s;
  if (h.magic != kMagic || h.ndim < 0 || h.ndim > 16 || h.textBytes > (1u << 20) ||
      h.dtype > static_cast<int32_t>(cpu::DType::I1)) {
    why = "a message that is not kiln's (another program on the port?)";
    return Status::Failed;
  }
  m.kind = static_cast<Kind>(h.kind);
  m.sequence = h.sequence;
  m.rank = h.rank;
  std::vector<int64_t> shape(static_cast<size_t>(h.ndim));
  if (h.ndim > 0)
    if (Status s = recvAll(fd, shape.data(), shape.size() * sizeof(int64_t), deadline, why);
        s != Status::Ok)
      return s;
  m.text.resize(h.textBytes);
  if (h.textBytes > 0)
    if (Status s = recvAll(fd, m.text.data(), h.textBytes, deadline, why); s != Status::Ok)
      return s;
  m.tensor.reset();
  if (h.dtype >= 0) {
    auto dtype = static_cast<cpu::DType>(h.dtype);
    // The shape comes from the wire: no negative dimension, no overflow,
    // and the bytes that follow must be exactly its size.
    std::optional<int64_t> bytes;
    if (llvm::all_of(shape, [](int64_t d) { return d >= 0; }))
      bytes = cpu::checkedBytes(shape, static_cast<int64_t>(cpu::storageSize(dtype)));
    if (!bytes || static_cast<uint64_t>(*bytes) != h.dataBytes ||
        (m.kind != Kind::Contribute && m.kind != Kind::Result)) {
      why = "a tensor message whose size does not match its shape";
      return Status::Failed;
    }
    m.tensor = HostTensor::uninitialized(dtype, shape);
    if (h.dataBytes > 0)
      if (Status s = recvAll(fd, m.tensor->raw(), h.dataBytes, deadline, why); s != Status::Ok)
        return s;
  }
  return Status::Ok;
}

void setNoDelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

std::string listRanks(const std::vector<int64_t> &ranks) {
  std::string text;
  for (int64_t r : ranks)
    text += (text.empty() ? "" : ", ") + std::to_string(r);
  return (ranks.size() == 1 ? "rank " : "ranks ") + text;
}

/// The axis name of an agreement over every rank of the group.
constexpr llvm::StringLiteral kEveryRank = "*";
} // namespace

llvm::Expected<std::unique_ptr<SocketGroup>> SocketGroup::connect(const GroupOptions &options) {
  if (options.size < 1 || options.rank < 0 || options.rank >= options.size)
    return error(llvm::formatv("rank {0} of {1}: not a rank of the group", options.rank,
                               options.size));
  if (options.port <= 0 || options.port > 65535)
    return error(llvm::formatv("port {0} is not a TCP port", options.port));
  std::unique_ptr<SocketGroup> group(new SocketGroup(options));
  group->mesh_ = {{"ranks", options.size}};
  if (options.size == 1)
    return group;
  llvm::Error err = options.rank == 0 ? group->listenAndAccept() : group->connectToRoot();
  if (err)
    return std::move(err);
  return group;
}

SocketGroup::~SocketGroup() {
  // Closing a socket with unread data resets the connection, which can
  // discard what the other side has not read yet (an abort's reason). So
  // say goodbye (FIN), read until the other side hangs up too (a second at
  // most), then close.
  auto deadline = Clock::now() + std::chrono::seconds(1);
  for (int fd : sockets_)
    if (fd >= 0)
      ::shutdown(fd, SHUT_WR);
  for (int fd : sockets_) {
    if (fd < 0)
      continue;
    char sink[4096];
    while (waitFor(fd, POLLIN, deadline)) {
      ssize_t n = ::recv(fd, sink, sizeof sink, 0);
      if (n == 0 || (n < 0 && errno != EINTR))
        break;
    }
    ::close(fd);
  }
  if (listener_ >= 0)
    ::close(listener_);
}

llvm::Error SocketGroup::listenAndAccept() {
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(options_.timeoutSeconds));
  addrinfo hints = {};
  hints.ai_family = AF_INET6;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  std::string port = std::to_string(options_.port);
  // Both IPv6 and IPv4 (a dual-stack socket), or IPv4 alone where the host
  // has no IPv6.
  std::string why;
  for (int family : {AF_INET6, AF_INET}) {
    hints.ai_family = family;
    addrinfo *found = nullptr;
    if (::getaddrinfo(nullptr, port.c_str(), &hints, &found) != 0)
      continue;
    for (addrinfo *a = found; a && listener_ < 0; a = a->ai_next) {
      int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0)
        continue;
      int one = 1, zero = 0;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (family == AF_INET6)
        ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
      if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 &&
          ::listen(fd, static_cast<int>(options_.size)) == 0) {
        listener_ = fd;
      } else {
        why = std::strerror(errno);
        ::close(fd);
      }
    }
    ::freeaddrinfo(found);
    if (listener_ >= 0)
      break;
  }
  if (listener_ < 0)
    return error(llvm::formatv("rank 0 cannot listen on port {0}: {1} (another run on this "
                               "port? choose one with MASTER_PORT)",
                               options_.port, why.empty() ? "no address" : why));
  sockets_.assign(static_cast<size_t>(options_.size), -1);
  int64_t connected = 0;
  while (connected < options_.size - 1) {
    if (!waitFor(listener_, POLLIN, deadline)) {
      std::vector<int64_t> missing;
      for (int64_t r = 1; r < options_.size; ++r)
        if (sockets_[r] < 0)
          missing.push_back(r);
      std::string reason = llvm::formatv("rank 0 waited {0:f0} s on port {1} for {2} to connect",
                                         options_.timeoutSeconds, options_.port,
                                         listRanks(missing));
      abortPeers(reason, -1);
      return failed(reason);
    }
    int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    setNoDelay(fd);
    Message hello;
    auto helloDeadline = std::min(deadline, Clock::now() + std::chrono::seconds(30));
    if (recvMessage(fd, hello, helloDeadline, why) != Status::Ok || hello.kind != Kind::Hello) {
      ::close(fd); // not a kiln rank (a port scanner): ignore it
      continue;
    }
    if (!options_.job.empty() && !hello.text.empty() && hello.text != options_.job) {
      // Another run's rank, on the port this run chose too: not ours.
      Message away{Kind::Abort, 0, 0,
                   llvm::formatv("port {0} is taken by another run (job {1}; this rank is of "
                                 "job {2}): give each run its own MASTER_PORT",
                                 options_.port, options_.job, hello.text),
                   std::nullopt};
      sendMessage(fd, away, helloDeadline, why);
      ::close(fd);
      continue;
    }
    std::string problem;
    if (hello.rank < 1 || hello.rank >= options_.size ||
        hello.sequence != static_cast<uint64_t>(options_.size))
      problem = llvm::formatv("a process connected as rank {0} of {1}, but this group has ranks "
                              "0-{2}",
                              hello.rank, hello.sequence, options_.size - 1);
    else if (sockets_[hello.rank] >= 0)
      problem = llvm::formatv("two processes connected as rank {0}", hello.rank);
    if (!problem.empty()) {
      Message abort{Kind::Abort, 0, 0, problem, std::nullopt};
      sendMessage(fd, abort, helloDeadline, why);
      ::close(fd);
      abortPeers(problem, -1);
      return failed(problem);
    }
    sockets_[hello.rank] = fd;
    ++connected;
  }
  // Everyone is here: stop listening (a late or stray process finds the
  // port closed), and say so.
  ::close(listener_);
  listener_ = -1;
  for (int64_t r = 1; r < options_.size; ++r) {
    Message welcome{Kind::Hello, 0, 0, {}, std::nullopt};
    if (sendMessage(sockets_[r], welcome, deadline, why) != Status::Ok) {
      std::string reason = llvm::formatv("rank {0} left before the group was complete", r);
      abortPeers(reason, r);
      return failed(reason);
    }
  }
  return llvm::Error::success();
}

llvm::Error SocketGroup::connectToRoot() {
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(options_.timeoutSeconds));
  std::string port = std::to_string(options_.port), why;
  int fd = -1;
  // Rank 0 may not listen yet: try until the deadline.
  while (fd < 0) {
    addrinfo hints = {};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo *found = nullptr;
    if (int rc = ::getaddrinfo(options_.host.c_str(), port.c_str(), &hints, &found); rc != 0)
      return error(llvm::formatv("rank {0} cannot resolve rank 0's host '{1}': {2}",
                                 options_.rank, options_.host, ::gai_strerror(rc)));
    for (addrinfo *a = found; a && fd < 0; a = a->ai_next) {
      int s = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (s < 0)
        continue;
      if (::connect(s, a->ai_addr, a->ai_addrlen) == 0) {
        fd = s;
      } else {
        why = std::strerror(errno);
        ::close(s);
      }
    }
    ::freeaddrinfo(found);
    if (fd >= 0)
      break;
    if (Clock::now() > deadline)
      return error(llvm::formatv("rank {0} could not reach rank 0 at {1}:{2} within {3:f0} s: "
                                 "{4}",
                                 options_.rank, options_.host, options_.port,
                                 options_.timeoutSeconds, why));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  setNoDelay(fd);
  sockets_ = {fd};
  Message hello{Kind::Hello, static_cast<uint64_t>(options_.size), options_.rank, options_.job,
                std::nullopt};
  if (sendMessage(fd, hello, deadline, why) != Status::Ok)
    return failed(llvm::formatv("rank 0 at {0}:{1} closed the connection", options_.host,
                                options_.port));
  Message welcome;
  Status s = recvMessage(fd, welcome, deadline, why);
  if (s == Status::Ok && welcome.kind == Kind::Abort)
    return failed(welcome.text);
  if (s == Status::TimedOut)
    return failed(llvm::formatv("rank {0} connected, but not every rank did within {1:f0} s",
                                options_.rank, options_.timeoutSeconds));
  if (s != Status::Ok || welcome.kind != Kind::Hello)
    return failed(llvm::formatv("rank 0 ended before every rank connected{0}",
                                why.empty() ? "" : ": " + why));
  return llvm::Error::success();
}

llvm::Error SocketGroup::failed(std::string reason) {
  if (failure_.empty())
    failure_ = std::move(reason);
  // Nothing more goes out; the destructor closes.
  for (int fd : sockets_)
    if (fd >= 0)
      ::shutdown(fd, SHUT_WR);
  return error(failure_);
}

void SocketGroup::abortPeers(const std::string &reason, int64_t except) {
  auto deadline = Clock::now() + std::chrono::seconds(5);
  std::string why;
  for (int64_t r = 1; r < static_cast<int64_t>(sockets_.size()); ++r)
    if (r != except && sockets_[r] >= 0) {
      Message abort{Kind::Abort, sequence_, 0, reason, std::nullopt};
      sendMessage(sockets_[r], abort, deadline, why);
    }
}

void SocketGroup::abort(llvm::StringRef reason) {
  if (!failure_.empty() || options_.size == 1)
    return;
  std::string text = llvm::formatv("rank {0} failed: {1}", options_.rank, reason).str();
  if (options_.rank == 0) {
    abortPeers(text, -1);
  } else if (!sockets_.empty() && sockets_[0] >= 0) {
    std::string why;
    Message abort{Kind::Abort, sequence_, options_.rank, text, std::nullopt};
    sendMessage(sockets_[0], abort, Clock::now() + std::chrono::seconds(5), why);
  }
  llvm::consumeError(failed(text));
}

std::optional<std::string> SocketGroup::peerFailure(llvm::StringRef during) {
  if (!failure_.empty())
    return failure_;
  for (size_t i = 0; i < sockets_.size(); ++i) {
    int fd = sockets_[i];
    pollfd p{fd, POLLIN, 0};
    if (fd < 0 || ::poll(&p, 1, 0) <= 0)
      continue;
    // Only a look at the header: a collective's contribution that arrives
    // early stays on the wire for the collective to read.
    Header h;
    ssize_t n = ::recv(fd, &h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
      continue;
    int64_t peer = options_.rank == 0 ? static_cast<int64_t>(i) : 0;
    std::string reason;
    if (n <= 0) {
      reason = llvm::formatv("rank {0} ended (its connection closed) during {1}", peer, during);
    } else if (static_cast<size_t>(n) == sizeof h && h.magic == kMagic &&
               h.kind == static_cast<uint32_t>(Kind::Abort)) {
      Message m;
      std::string why;
      reason = recvMessage(fd, m, Clock::now() + std::chrono::seconds(1), why) == Status::Ok
                   ? m.text
                   : llvm::formatv("rank {0} ended in the middle of a message during {1}", peer,
                                   during)
                         .str();
    } else {
      continue;
    }
    if (options_.rank == 0)
      abortPeers(reason, peer);
    llvm::consumeError(failed(reason));
    return failure_;
  }
  return std::nullopt;
}

llvm::Expected<HostTensor> SocketGroup::allReduce(const HostTensor &x, llvm::StringRef axis) {
  return exchange(CollectiveKind::AllReduce, x, axis, 0);
}

llvm::Expected<HostTensor> SocketGroup::allGather(const HostTensor &x, llvm::StringRef axis,
                                                  int64_t dim) {
  return exchange(CollectiveKind::AllGather, x, axis, dim);
}

llvm::Expected<HostTensor> SocketGroup::reduceScatter(const HostTensor &x, llvm::StringRef axis,
                                                      int64_t dim) {
  return exchange(CollectiveKind::ReduceScatter, x, axis, dim);
}

llvm::Expected<bool> SocketGroup::any(bool flag) {
  HostTensor t(cpu::DType::F64, {});
  t.set(0, flag ? 1.0 : 0.0);
  auto sum = exchange(CollectiveKind::AllReduce, t, kEveryRank, 0);
  if (!sum)
    return sum.takeError();
  return sum->get(0) != 0;
}

llvm::Expected<int64_t> SocketGroup::max(int64_t value) {
  HostTensor t(cpu::DType::I64, {1});
  t.set(0, static_cast<double>(value));
  auto all = exchange(CollectiveKind::AllGather, t, kEveryRank, 0);
  if (!all)
    return all.takeError();
  int64_t most = value;
  for (int64_t i = 0; i < all->numel(); ++i)
    most = std::max(most, static_cast<int64_t>(all->get(i)));
  return most;
}

llvm::Expected<HostTensor> SocketGroup::exchange(CollectiveKind kind, const HostTensor &x,
                                                 llvm::StringRef axis, int64_t dim) {
  if (!failure_.empty())
    return error(failure_);
  std::string what =
      axis == kEveryRank
          ? "the ranks' end-of-step agreement"
          : llvm::formatv("{0} over {1} (dimension {2})", cpu::nameOf(kind), axis, dim).str();
  ++sequence_;
  if (options_.size == 1)
    return cpu::combine(kind, {&x}, {0}, axis, dim, 0);
  if (options_.rank == 0)
    return coordinate(kind, x, axis, dim, what);
  // Rank 0 names the ranks it waited for when the timeout passes; the
  // others wait a little longer, to hear that from it.
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(options_.timeoutSeconds + 2));
  std::string why;
  Message mine{Kind::Contribute, sequence_, options_.rank, what, x};
  Status s = sendMessage(sockets_[0], mine, deadline, why);
  Message reply;
  if (s == Status::Ok)
    s = recvMessage(sockets_[0], reply, deadline, why);
  if (s == Status::Closed)
    return failed("rank 0 ended (its connection closed) during " + what);
  if (s == Status::TimedOut)
    return failed(llvm::formatv("timed out after {0:f0} s in {1} waiting for rank 0",
                                options_.timeoutSeconds + 2, what));
  if (s == Status::Failed)
    return failed("the connection to rank 0 failed during " + what + ": " + why);
  if (reply.kind == Kind::Abort)
    return failed(reply.text);
  if (reply.kind != Kind::Result || reply.sequence != sequence_ || !reply.tensor)
    return failed("rank 0 answered " + what + " out of order");
  return std::move(*reply.tensor);
}

llvm::Expected<HostTensor> SocketGroup::coordinate(CollectiveKind kind, const HostTensor &x,
                                                   llvm::StringRef axis, int64_t dim,
                                                   const std::string &what) {
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(options_.timeoutSeconds));
  const int64_t n = options_.size;
  std::vector<std::optional<HostTensor>> received(static_cast<size_t>(n));
  std::vector<int64_t> pending;
  for (int64_t r = 1; r < n; ++r)
    pending.push_back(r);
  std::string why;
  while (!pending.empty()) {
    std::vector<pollfd> polls;
    for (int64_t r : pending)
      polls.push_back({sockets_[r], POLLIN, 0});
    int ready = ::poll(polls.data(), polls.size(), millisecondsLeft(deadline));
    if (ready < 0 && errno == EINTR)
      continue;
    if (ready <= 0) {
      std::string reason = llvm::formatv("timed out after {0:f0} s in {1} waiting for {2}",
                                         options_.timeoutSeconds, what, listRanks(pending));
      abortPeers(reason, -1);
      return failed(reason);
    }
    std::vector<int64_t> still;
    for (auto [r, p] : llvm::zip_equal(pending, polls)) {
      if (p.revents == 0) {
        still.push_back(r);
        continue;
      }
      Message m;
      Status s = recvMessage(sockets_[r], m, deadline, why);
      std::string reason;
      if (s == Status::Closed)
        reason = llvm::formatv("rank {0} ended (its connection closed) during {1}", r, what);
      else if (s == Status::TimedOut)
        reason = llvm::formatv("rank {0} stopped in the middle of a message during {1}", r, what);
      else if (s == Status::Failed)
        reason = llvm::formatv("the connection to rank {0} failed during {1}: {2}", r, what, why);
      else if (m.kind == Kind::Abort)
        reason = m.text;
      else if (m.kind != Kind::Contribute || m.sequence != sequence_ || m.text != what ||
               !m.tensor)
        reason = llvm::formatv("rank {0} is in {1} (collective #{2}) while rank 0 is in {3} "
                               "(#{4}): the ranks run different programs",
                               r, m.text, m.sequence, what, sequence_);
      if (!reason.empty()) {
        // Everyone hears why, but the rank that failed or left.
        bool gone = s != Status::Ok || m.kind == Kind::Abort;
        abortPeers(reason, gone ? r : -1);
        return failed(reason);
      }
      received[r] = std::move(m.tensor);
    }
    pending = std::move(still);
  }
  // Every rank's result, from its group's contributions in rank order.
  std::optional<HostTensor> own;
  for (int64_t r = 0; r < n; ++r) {
    std::vector<int64_t> ranks;
    if (axis == kEveryRank)
      for (int64_t k = 0; k < n; ++k)
        ranks.push_back(k);
    else
      ranks = meshGroup(mesh_, r, axis);
    std::vector<const HostTensor *> members;
    for (int64_t k : ranks)
      members.push_back(k == 0 ? &x : &*received[k]);
    int64_t coordinate = axis == kEveryRank ? r : meshCoordinate(mesh_, r, axis);
    auto result = cpu::combine(kind, members, ranks, axis, dim, coordinate);
    if (!result) {
      std::string reason = llvm::toString(result.takeError());
      abortPeers(reason, -1);
      return failed(reason);
    }
    if (r == 0) {
      own = std::move(*result);
      continue;
    }
    Message reply{Kind::Result, sequence_, 0, {}, std::move(*result)};
    if (sendMessage(sockets_[r], reply, deadline, why) != Status::Ok) {
      std::string reason =
          llvm::formatv("rank {0} ended (its connection closed) during {1}", r, what);
      abortPeers(reason, r);
      return failed(reason);
    }
  }
  return std::move(*own);
}

} // namespace kiln::dist
