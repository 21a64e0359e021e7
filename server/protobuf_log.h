#pragma once

// libprotobuf's own log, bounded. Parsing a request whose proto3 string field is not
// UTF-8 logs an ERROR line each time ("String field ... contains invalid UTF-8 data"),
// so any caller could write the agent's log as fast as it sends; gRPC then refuses the
// call (rpc_interceptor.h makes that INVALID_ARGUMENT).

#include <cstdint>
#include <functional>
#include <string>

namespace umpath::server {

// Sends libprotobuf's log lines to `sink`, at most one every `interval_ns` (the first
// at once; a later line says how many were not written), each cut to 256 bytes and
// escaped. Process-wide (google::protobuf::SetLogHandler, which is not thread-safe):
// call it at start, before any thread parses a message. FATAL lines always pass.
void LimitProtobufLog(std::function<void(const std::string&)> sink,
                      int64_t interval_ns = 10'000'000'000);

}  // namespace umpath::server
