// A small unpickler for the subset of the pickle protocol (0x80 PROTO 2-5,
// binary opcodes only) that torch.save writes. It builds a tree of PyValue nodes;
// nothing is executed: GLOBAL and REDUCE only record what would have been called,
// and src/io/torch_bin.cpp interprets the few callables a state dict uses.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace m3d::io {

struct PyValue {
  enum class Kind { None, Bool, Int, Float, String, Bytes, Tuple, List, Dict, Global, Object, PersistentId };
  Kind kind = Kind::None;
  int64_t int_value = 0;  // Int, Bool
  double float_value = 0;
  std::string text;  // String, Bytes; Global: "module.name"
  std::vector<PyValue*> items;  // Tuple, List; Object: appended items
  std::vector<std::pair<PyValue*, PyValue*>> entries;  // Dict; Object: set items
  PyValue* callable = nullptr;  // Object: the Global it was made by
  PyValue* args = nullptr;  // Object: argument tuple; PersistentId: the id
  PyValue* state = nullptr;  // Object: BUILD state

  bool is_global_call(const char* name) const;  // an Object made by Global `name`
};

// Owns every node; values refer to each other by plain pointers, so shared
// (memoized) and even cyclic references are safe.
class Pickle {
 public:
  PyValue* root = nullptr;
  PyValue* make(PyValue::Kind kind);

 private:
  std::vector<std::unique_ptr<PyValue>> arena_;
};

// Throws m3d::Error mentioning `where` and the byte offset on malformed input.
std::unique_ptr<Pickle> pickle_load(const uint8_t* data, size_t size, const std::string& where);

}  // namespace m3d::io
