// kestrel serve: noticing that the client of a non-streaming request went away.
//
// A streaming response learns it at its next write; a non-streaming handler writes
// nothing until the request is done. cpp-httplib 0.11 (Debian 12) gives a handler
// neither its socket nor a "connection closed" query, so the handler finds its
// connection's socket by the connection's addresses (a TCP connection's local and
// peer address and port are unique, and httplib keeps the descriptor open until the
// handler returns) and peeks at it while it waits.
//
//   const int fd = kcli::serve::connection_socket(req);  // -1: not found
//   while (!done) { wait(100 ms); if (fd >= 0 && kcli::serve::peer_closed(fd)) cancel(); }
#pragma once

#include <httplib.h>

namespace kcli::serve {

// The descriptor of the TCP connection that carried req, or -1 when none of the
// process's sockets matches (e.g. a unix socket, or /proc not mounted).
int connection_socket(const httplib::Request& req);

// Whether the peer has closed the connected socket fd (end of stream or reset), without
// consuming anything: bytes waiting to be read (a pipelined request) count as open.
bool peer_closed(int fd);

}  // namespace kcli::serve
