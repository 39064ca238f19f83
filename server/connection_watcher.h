// ConnectionWatcher: tells an HTTP handler that waits (for room to load its adapter, for its
// whole answer) that its client has gone, so the request is cancelled instead of generating for
// no one, as vLLM aborts a request whose client disconnects. Debian's cpp-httplib (0.11) gives a
// handler neither its socket nor a way to ask whether the client is still there (later versions
// have Request::is_connection_closed); the watcher finds the connection's socket by its two
// addresses and checks it every kWatchPeriod the way the library checks a stream's: readable
// with nothing left to read means the client closed it. Thread-safe; one thread of its own,
// asleep while nothing is watched.
#pragma once

#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace loraserve::server {

// How often the watched connections are checked.
inline constexpr std::chrono::milliseconds kWatchPeriod{100};

class ConnectionWatcher {
 public:
  ConnectionWatcher();
  ~ConnectionWatcher();  // joins the thread
  ConnectionWatcher(const ConnectionWatcher&) = delete;
  ConnectionWatcher& operator=(const ConnectionWatcher&) = delete;

  // Ends its watch when destroyed: once the destructor returns, on_gone is not called.
  class Watch {
   public:
    Watch() = default;
    Watch(Watch&& o) noexcept : watcher_(o.watcher_), id_(o.id_) { o.watcher_ = nullptr; }
    Watch& operator=(Watch&&) = delete;
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;
    ~Watch();

   private:
    friend class ConnectionWatcher;
    Watch(ConnectionWatcher* watcher, uint64_t id) : watcher_(watcher), id_(id) {}
    ConnectionWatcher* watcher_ = nullptr;
    uint64_t id_ = 0;
  };

  // Calls `on_gone` once, on the watcher's thread, if the client of `req` closes the connection
  // while the watch lives. REQUIRES: called on the handler's thread, and the watch ends before
  // the handler returns (while the library still holds the connection open).
  Watch watch(const httplib::Request& req, std::function<void()> on_gone);

  // Connections watched now (for tests).
  size_t watched() const;

 private:
  static constexpr int kUnsearched = -1;
  static constexpr int kNotFound = -2;  // not a TCP connection of this process: not watched
  struct Entry {
    std::string local_ip, remote_ip;
    int local_port = -1, remote_port = -1;
    int fd = kUnsearched;  // the socket once found, or kNotFound
    std::function<void()> on_gone;
  };

  void run();
  void find_sockets();  // searches once for each new entry's socket. REQUIRES: mu_ held
  void forget(uint64_t id);

  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::map<uint64_t, Entry> entries_;
  uint64_t next_id_ = 1;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace loraserve::server
