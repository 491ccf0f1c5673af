// A file that appears under its final name only when complete: bytes go to a
// temporary sibling, commit() fsyncs and renames it; destruction without commit()
// removes the temporary. Checkpoint writers use it so a crash never leaves a
// half-written file under the final name.
#pragma once

#include <cstddef>
#include <string>

namespace m3d::io {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t size);
  void commit();

 private:
  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
};

}  // namespace m3d::io
