// Static rendezvous and free-port selection.
#include "cairn/elastic/rendezvous.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace cairn::elastic {

Result<World> StaticRendezvous::next_round(int round, double /*timeout_s*/) {
  World w;
  w.num_nodes = options_.num_nodes;
  w.node_rank = options_.node_rank;
  w.nproc_per_node = options_.nproc_per_node;
  w.run_id = options_.run_id;
  w.round = round;
  if (options_.master_host.empty()) {
    CAIRN_ASSIGN_OR_RETURN(w.master_port, pick_free_port());
    w.master_addr = "127.0.0.1";
  } else {
    w.master_addr = options_.master_host;
    w.master_port = options_.master_port;
  }
  return w;
}

Result<int> pick_free_port() {
  // An IPv6 socket with v6only off covers IPv4 too; fall back to IPv4 where IPv6 is absent.
  int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int port = -1;
  if (fd >= 0) {
    int off = 0;
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
    sockaddr_in6 addr{};
    addr.sin6_family = AF_INET6;
    addr.sin6_addr = in6addr_any;
    socklen_t len = sizeof(addr);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
      port = ntohs(addr.sin6_port);
    ::close(fd);
  }
  if (port > 0) return port;
  fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return Status::IoError(std::string("cannot create a socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    Status s = Status::IoError(std::string("cannot bind a free port: ") + std::strerror(errno));
    ::close(fd);
    return s;
  }
  ::close(fd);
  return int(ntohs(addr.sin_port));
}

}  // namespace cairn::elastic
