#pragma once

#include <cstdint>

namespace umpath {

class Worker;

// A frontend that feeds a worker I/O (a ublk queue): it is polled on the worker's
// thread beside the queue pairs, and takes requests from its own ring into the heads'
// channels.
//
// Threading: every method runs on the owning worker's thread, except wake_fd(), read
// once when the worker registers the source.
class IoSource {
 public:
  // Takes new requests and submits them to channels; returns how many things it did.
  virtual uint32_t Poll(Worker& worker) = 0;
  // Hands back what completed since the last flush (one system call per batch).
  virtual void Flush() = 0;
  // Readable when Poll has something to take, so an idle worker can sleep.
  virtual int wake_fd() const = 0;

 protected:
  ~IoSource() = default;
};

}  // namespace umpath
