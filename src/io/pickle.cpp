#include "io/pickle.h"

#include <cstring>
#include <unordered_map>

#include "m3d/error.h"

namespace m3d::io {

bool PyValue::is_global_call(const char* name) const { return kind == Kind::Object && callable != nullptr && callable->text == name; }

PyValue* Pickle::make(PyValue::Kind kind) {
  arena_.push_back(std::make_unique<PyValue>());
  arena_.back()->kind = kind;
  return arena_.back().get();
}

namespace {

using Kind = PyValue::Kind;

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, const std::string& where) : data_(data), size_(size), where_(where), out_(std::make_unique<Pickle>()) {}

  std::unique_ptr<Pickle> run() {
    while (true) {
      const size_t at = pos_;
      const uint8_t op = take<uint8_t>();
      if (op == '.') break;  // STOP
      step(op, at);
    }
    if (stack_.size() != 1 || !marks_.empty()) error(pos_, "ends with {} values on the stack", stack_.size());
    out_->root = stack_.back();
    return std::move(out_);
  }

 private:
  template <typename... Args>
  [[noreturn]] void error(size_t at, fmt::format_string<Args...> format, Args&&... args) {
    fail("{}: pickle offset {}: {}", where_, at, fmt::format(format, std::forward<Args>(args)...));
  }

  template <typename T>
  T take() {
    if (size_ - pos_ < sizeof(T)) error(pos_, "truncated (needs {} more bytes)", sizeof(T));
    T value;
    std::memcpy(&value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  std::string take_bytes(uint64_t n) {
    if (size_ - pos_ < n) error(pos_, "truncated string of {} bytes", n);
    std::string out(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return out;
  }

  std::string take_line() {
    const void* end = std::memchr(data_ + pos_, '\n', size_ - pos_);
    if (end == nullptr) error(pos_, "unterminated GLOBAL name");
    const size_t n = static_cast<const uint8_t*>(end) - (data_ + pos_);
    std::string out = take_bytes(n);
    ++pos_;
    return out;
  }

  PyValue* pop(size_t at) {
    if (stack_.empty() || (!marks_.empty() && stack_.size() == marks_.back())) error(at, "stack underflow");
    PyValue* value = stack_.back();
    stack_.pop_back();
    return value;
  }

  PyValue* top(size_t at) {
    if (stack_.empty()) error(at, "stack underflow");
    return stack_.back();
  }

  // Values pushed since the last MARK, which is removed.
  std::vector<PyValue*> pop_mark(size_t at) {
    if (marks_.empty()) error(at, "no MARK on the stack");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<PyValue*> values(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return values;
  }

  PyValue* tuple(std::vector<PyValue*> items) {
    PyValue* value = out_->make(Kind::Tuple);
    value->items = std::move(items);
    return value;
  }

  PyValue* push_int(int64_t v) {
    PyValue* value = out_->make(Kind::Int);
    value->int_value = v;
    stack_.push_back(value);
    return value;
  }

  void push_text(Kind kind, std::string text) {
    PyValue* value = out_->make(kind);
    value->text = std::move(text);
    stack_.push_back(value);
  }

  void push_global(std::string module, const std::string& name) { push_text(Kind::Global, module + "." + name); }

  void set_items(size_t at, PyValue* target, const std::vector<PyValue*>& values) {
    if (values.size() % 2 != 0) error(at, "SETITEMS with an odd number of values");
    if (target->kind != Kind::Dict && target->kind != Kind::Object) error(at, "SETITEM on a non-mapping");
    for (size_t i = 0; i < values.size(); i += 2) target->entries.emplace_back(values[i], values[i + 1]);
  }

  void append(size_t at, PyValue* target, const std::vector<PyValue*>& values) {
    if (target->kind != Kind::List && target->kind != Kind::Object) error(at, "APPEND on a non-list");
    target->items.insert(target->items.end(), values.begin(), values.end());
  }

  void memo_put(uint32_t key, size_t at) { memo_[key] = top(at); }

  void memo_get(uint32_t key, size_t at) {
    auto it = memo_.find(key);
    if (it == memo_.end()) error(at, "memo key {} was never stored", key);
    stack_.push_back(it->second);
  }

  void step(uint8_t op, size_t at) {
    switch (op) {
      case 0x80: {  // PROTO
        const uint8_t version = take<uint8_t>();
        if (version < 2 || version > 5) error(at, "unsupported pickle protocol {}", version);
        break;
      }
      case 0x95:
        take<uint64_t>();
        break;  // FRAME: a length hint only
      case '}':
        stack_.push_back(out_->make(Kind::Dict));
        break;
      case ']':
        stack_.push_back(out_->make(Kind::List));
        break;
      case ')':
        stack_.push_back(tuple({}));
        break;
      case '(':
        marks_.push_back(stack_.size());
        break;
      case 'N':
        stack_.push_back(out_->make(Kind::None));
        break;
      case 0x88:
      case 0x89: {  // NEWTRUE, NEWFALSE
        PyValue* value = out_->make(Kind::Bool);
        value->int_value = op == 0x88;
        stack_.push_back(value);
        break;
      }
      case 'J':
        push_int(take<int32_t>());
        break;
      case 'K':
        push_int(take<uint8_t>());
        break;
      case 'M':
        push_int(take<uint16_t>());
        break;
      case 0x8a: {  // LONG1: little-endian two's complement
        const uint8_t n = take<uint8_t>();
        if (n > 8) error(at, "integer of {} bytes does not fit 64 bits", n);
        const std::string bytes = take_bytes(n);
        uint64_t v = 0;
        for (size_t i = 0; i < n; ++i) v |= uint64_t{static_cast<uint8_t>(bytes[i])} << (8 * i);
        if (n > 0 && n < 8 && (static_cast<uint8_t>(bytes[n - 1]) & 0x80)) v |= ~uint64_t{0} << (8 * n);
        push_int(static_cast<int64_t>(v));
        break;
      }
      case 'G': {  // BINFLOAT: big-endian double
        uint64_t bits = __builtin_bswap64(take<uint64_t>());
        PyValue* value = out_->make(Kind::Float);
        std::memcpy(&value->float_value, &bits, sizeof(bits));
        stack_.push_back(value);
        break;
      }
      case 0x8c:
        push_text(Kind::String, take_bytes(take<uint8_t>()));
        break;  // SHORT_BINUNICODE
      case 'X':
        push_text(Kind::String, take_bytes(take<uint32_t>()));
        break;  // BINUNICODE
      case 0x8d:
        push_text(Kind::String, take_bytes(take<uint64_t>()));
        break;  // BINUNICODE8
      case 'U':
        push_text(Kind::String, take_bytes(take<uint8_t>()));
        break;  // SHORT_BINSTRING
      case 'T':
        push_text(Kind::String, take_bytes(take<uint32_t>()));
        break;  // BINSTRING
      case 'C':
        push_text(Kind::Bytes, take_bytes(take<uint8_t>()));
        break;  // SHORT_BINBYTES
      case 'B':
        push_text(Kind::Bytes, take_bytes(take<uint32_t>()));
        break;  // BINBYTES
      case 'c': {  // GLOBAL module\nname\n
        std::string module = take_line();
        push_global(std::move(module), take_line());
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        PyValue* name = pop(at);
        PyValue* module = pop(at);
        if (name->kind != Kind::String || module->kind != Kind::String) error(at, "STACK_GLOBAL of non-strings");
        push_global(module->text, name->text);
        break;
      }
      case 't':
        stack_.push_back(tuple(pop_mark(at)));
        break;
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        std::vector<PyValue*> items(op - 0x84);
        for (size_t i = items.size(); i-- > 0;) items[i] = pop(at);
        stack_.push_back(tuple(std::move(items)));
        break;
      }
      case 'q':
        memo_put(take<uint8_t>(), at);
        break;  // BINPUT
      case 'r':
        memo_put(take<uint32_t>(), at);
        break;  // LONG_BINPUT
      case 0x94:
        memo_put(static_cast<uint32_t>(memo_.size()), at);
        break;  // MEMOIZE
      case 'h':
        memo_get(take<uint8_t>(), at);
        break;  // BINGET
      case 'j':
        memo_get(take<uint32_t>(), at);
        break;  // LONG_BINGET
      case 'Q': {  // BINPERSID
        PyValue* value = out_->make(Kind::PersistentId);
        value->args = pop(at);
        stack_.push_back(value);
        break;
      }
      case 'R':  // REDUCE
      case 0x81: {  // NEWOBJ
        PyValue* args = pop(at);
        PyValue* callable = pop(at);
        if (callable->kind != Kind::Global) error(at, "call of a non-global");
        if (args->kind != Kind::Tuple) error(at, "call arguments are not a tuple");
        PyValue* value = out_->make(Kind::Object);
        value->callable = callable;
        value->args = args;
        stack_.push_back(value);
        break;
      }
      case 'b': {  // BUILD
        PyValue* state = pop(at);
        PyValue* target = top(at);
        if (target->kind == Kind::Object) target->state = state;
        break;
      }
      case 's': {  // SETITEM
        PyValue* value = pop(at);
        PyValue* key = pop(at);
        set_items(at, top(at), {key, value});
        break;
      }
      case 'u': {  // SETITEMS
        std::vector<PyValue*> values = pop_mark(at);
        set_items(at, top(at), values);
        break;
      }
      case 'a': {  // APPEND
        PyValue* value = pop(at);
        append(at, top(at), {value});
        break;
      }
      case 'e': {  // APPENDS
        std::vector<PyValue*> values = pop_mark(at);
        append(at, top(at), values);
        break;
      }
      default:
        error(at, "unsupported opcode 0x{:02x} (only the binary protocol torch.save writes is read)", op);
    }
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& where_;
  std::unique_ptr<Pickle> out_;
  std::vector<PyValue*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, PyValue*> memo_;
};

}  // namespace

std::unique_ptr<Pickle> pickle_load(const uint8_t* data, size_t size, const std::string& where) { return Unpickler(data, size, where).run(); }

}  // namespace m3d::io
