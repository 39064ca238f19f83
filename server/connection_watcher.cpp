#include "server/connection_watcher.h"

#include <dirent.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>

namespace loraserve::server {
namespace {

// An address as cpp-httplib writes Request::remote_addr and local_addr: numeric host, and port.
bool numeric_address(const sockaddr_storage& addr, socklen_t len, std::string* ip, int* port) {
  if (addr.ss_family == AF_INET) {
    *port = ntohs(reinterpret_cast<const sockaddr_in&>(addr).sin_port);
  } else if (addr.ss_family == AF_INET6) {
    *port = ntohs(reinterpret_cast<const sockaddr_in6&>(addr).sin6_port);
  } else {
    return false;
  }
  std::array<char, NI_MAXHOST> host{};
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, host.data(), host.size(), nullptr,
                  0, NI_NUMERICHOST) != 0)
    return false;
  *ip = host.data();
  return true;
}

// One end of a socket (its peer's, or its own) as numeric_address writes it; false when it
// has none (not a connected IP socket).
bool socket_end(int fd, bool peer, std::string* ip, int* port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  const int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len)
                      : getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return rc == 0 && numeric_address(addr, len, ip, port);
}

// True when the peer has closed the connection: readable (or hung up) with nothing to read.
// Bytes waiting (a pipelined next request) mean it is still there.
bool client_gone(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if ((p.revents & (POLLERR | POLLNVAL)) != 0) return true;
  char c;
  const ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return false;
  if (n == 0) return true;
  return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

}  // namespace

ConnectionWatcher::ConnectionWatcher() : thread_([this] { run(); }) {}

ConnectionWatcher::~ConnectionWatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

ConnectionWatcher::Watch::~Watch() {
  if (watcher_ != nullptr) watcher_->forget(id_);
}

ConnectionWatcher::Watch ConnectionWatcher::watch(const httplib::Request& req,
                                                  std::function<void()> on_gone) {
  Entry e;
  e.local_ip = req.local_addr;
  e.local_port = req.local_port;
  e.remote_ip = req.remote_addr;
  e.remote_port = req.remote_port;
  e.on_gone = std::move(on_gone);
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = next_id_++;
    entries_.emplace(id, std::move(e));
  }
  changed_.notify_all();
  return Watch(this, id);
}

size_t ConnectionWatcher::watched() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

void ConnectionWatcher::forget(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);  // waits for a check in progress
  entries_.erase(id);
}

void ConnectionWatcher::find_sockets() {
  bool any = false;
  for (const auto& [id, e] : entries_) any = any || e.fd == kUnsearched;
  if (!any) return;
  DIR* dir = opendir("/proc/self/fd");
  while (dir != nullptr) {
    const dirent* d = readdir(dir);
    if (d == nullptr) break;
    int fd = -1;
    const char* end = d->d_name + std::strlen(d->d_name);
    if (std::from_chars(d->d_name, end, fd).ptr != end || fd == dirfd(dir)) continue;
    // Each descriptor's ends are read once, whatever the number of connections looked for.
    std::string remote_ip, local_ip;
    int remote_port = -1, local_port = -1;
    if (!socket_end(fd, /*peer=*/true, &remote_ip, &remote_port) ||
        !socket_end(fd, /*peer=*/false, &local_ip, &local_port))
      continue;
    for (auto& [id, e] : entries_) {
      if (e.fd == kUnsearched && e.remote_port == remote_port && e.local_port == local_port &&
          e.remote_ip == remote_ip && e.local_ip == local_ip)
        e.fd = fd;
    }
  }
  if (dir != nullptr) closedir(dir);
  for (auto& [id, e] : entries_)
    if (e.fd == kUnsearched) e.fd = kNotFound;
}

void ConnectionWatcher::run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    changed_.wait(lock, [&] { return stopping_ || !entries_.empty(); });
    if (stopping_) return;
    // A request that ends within the first period is never looked for.
    changed_.wait_for(lock, kWatchPeriod, [&] { return stopping_; });
    if (stopping_) return;
    // Under the lock: a watch ends only between checks, so its socket is still the
    // connection's while it is checked, and on_gone never runs after the watch ended.
    find_sockets();
    for (auto it = entries_.begin(); it != entries_.end();) {
      Entry& e = it->second;
      if (e.fd >= 0 && client_gone(e.fd)) {
        e.on_gone();
        it = entries_.erase(it);  // called once; the Watch's forget finds nothing
      } else {
        ++it;
      }
    }
  }
}

}  // namespace loraserve::server
