#include "io/torch_bin.h"

#include <map>

#include "io/pickle.h"
#include "io/zip.h"
#include "m3d/error.h"

namespace m3d::io {
namespace {

using Kind = PyValue::Kind;

std::optional<DType> storage_dtype(const std::string& storage_class) {
  static const std::map<std::string, DType> kStorages = {
      {"torch.DoubleStorage", DType::F64}, {"torch.FloatStorage", DType::F32}, {"torch.HalfStorage", DType::F16},  {"torch.BFloat16Storage", DType::BF16},
      {"torch.LongStorage", DType::I64},   {"torch.IntStorage", DType::I32},   {"torch.ShortStorage", DType::I16}, {"torch.CharStorage", DType::I8},
      {"torch.ByteStorage", DType::U8},    {"torch.BoolStorage", DType::BOOL},
  };
  auto it = kStorages.find(storage_class);
  if (it == kStorages.end()) return std::nullopt;
  return it->second;
}

std::vector<int64_t> int_tuple(const PyValue* value, const std::string& where, const char* what) {
  if (value->kind != Kind::Tuple) fail("{}: {} is not a tuple", where, what);
  std::vector<int64_t> out;
  for (const PyValue* item : value->items) {
    if (item->kind != Kind::Int) fail("{}: {} holds a non-integer", where, what);
    out.push_back(item->int_value);
  }
  return out;
}

class StateDictReader {
 public:
  StateDictReader(std::shared_ptr<const MappedFile> file, std::string prefix, const std::vector<ZipEntry>& entries)
      : file_(std::move(file)), prefix_(std::move(prefix)) {
    for (const auto& entry : entries) entries_[entry.name] = &entry;
  }

  // A tensor from `_rebuild_tensor_v2(storage, offset, size, stride, ...)` or
  // `_rebuild_parameter(tensor, ...)`; nullopt when `value` is not a tensor.
  std::optional<TensorRecord> tensor(const std::string& name, const PyValue* value) {
    const std::string where = fmt::format("{}: tensor '{}'", file_->path(), name);
    if (value->is_global_call("torch._utils._rebuild_parameter") || value->is_global_call("torch._utils._rebuild_parameter_with_state")) {
      if (value->args->items.empty()) fail("{}: parameter without data", where);
      value = value->args->items[0];
    }
    if (!value->is_global_call("torch._utils._rebuild_tensor_v2")) return std::nullopt;
    const auto& args = value->args->items;
    if (args.size() < 4 || args[0]->kind != Kind::PersistentId || args[1]->kind != Kind::Int) { fail("{}: malformed _rebuild_tensor_v2 arguments", where); }
    const Storage& storage = this->storage(args[0]->args, where);
    TensorRecord record;
    record.name = name;
    record.dtype = storage.dtype;
    record.shape = int_tuple(args[2], where, "size");
    record.strides = int_tuple(args[3], where, "stride");
    const int64_t offset = args[1]->int_value;
    if (record.shape.size() != record.strides.size()) fail("{}: {} sizes but {} strides", where, record.shape.size(), record.strides.size());
    // The last element the view touches must lie inside the storage.
    const int64_t numel = shape_numel_checked(record.shape);
    if (numel < 0) fail("{}: invalid size {}", where, shape_string(record.shape));
    if (offset < 0 || offset > storage.numel) fail("{}: storage offset {} outside a storage of {} elements", where, offset, storage.numel);
    if (numel > 0) {
      int64_t last = offset;
      for (size_t i = 0; i < record.shape.size(); ++i) {
        if (record.strides[i] < 0) fail("{}: negative stride {}", where, record.strides[i]);
        if (record.strides[i] > 0 && record.shape[i] - 1 > (storage.numel - last) / record.strides[i]) {
          fail("{}: view of size {} stride {} at offset {} exceeds a storage of {} elements", where, shape_string(record.shape), shape_string(record.strides),
               offset, storage.numel);
        }
        last += (record.shape[i] - 1) * record.strides[i];
      }
      if (last >= storage.numel) {
        fail("{}: view of size {} at offset {} exceeds a storage of {} elements", where, shape_string(record.shape), offset, storage.numel);
      }
    }
    record.data = storage.data + static_cast<size_t>(offset) * dtype_size(storage.dtype);
    record.file = file_;
    return record;
  }

 private:
  struct Storage {
    DType dtype;
    const uint8_t* data;
    int64_t numel;
  };

  // persistent id: ('storage', <StorageClass>, key, location, numel)
  const Storage& storage(const PyValue* id, const std::string& where) {
    if (id->kind != Kind::Tuple || id->items.size() < 5 || id->items[0]->kind != Kind::String || id->items[0]->text != "storage" ||
        id->items[1]->kind != Kind::Global || id->items[2]->kind != Kind::String || id->items[4]->kind != Kind::Int) {
      fail("{}: malformed storage reference", where);
    }
    const std::string& key = id->items[2]->text;
    if (auto it = storages_.find(key); it != storages_.end()) return it->second;
    auto dtype = storage_dtype(id->items[1]->text);
    if (!dtype) fail("{}: unsupported storage type {} (supported: {})", where, id->items[1]->text, dtype_supported_list());
    auto entry = entries_.find(prefix_ + "data/" + key);
    if (entry == entries_.end()) fail("{}: storage '{}' is missing from the archive", where, key);
    if (entry->second->method != 0) fail("{}: storage '{}' is compressed; torch.save stores it uncompressed", where, key);
    const int64_t numel = id->items[4]->int_value;
    if (numel < 0 || static_cast<uint64_t>(numel) > entry->second->size / dtype_size(*dtype) ||
        static_cast<uint64_t>(numel) * dtype_size(*dtype) != entry->second->size) {
      fail("{}: storage '{}' declares {} elements of {} but holds {} bytes", where, key, numel, dtype_name(*dtype), entry->second->size);
    }
    Storage storage{*dtype, file_->data() + entry->second->data_offset, numel};
    return storages_.emplace(key, storage).first->second;
  }

  std::shared_ptr<const MappedFile> file_;
  std::string prefix_;
  std::map<std::string, const ZipEntry*> entries_;
  std::map<std::string, Storage> storages_;
};

// The mapping that holds the tensors: the root dict, or the one under a
// conventional key such as {"state_dict": {...}} that training scripts write.
const std::vector<std::pair<PyValue*, PyValue*>>* state_dict_entries(const PyValue* root) {
  auto is_mapping = [](const PyValue* v) { return v->kind == Kind::Dict || v->is_global_call("collections.OrderedDict"); };
  if (!is_mapping(root)) return nullptr;
  for (const auto& [key, value] : root->entries) {
    if (key->kind == Kind::String && (key->text == "state_dict" || key->text == "model" || key->text == "module") && is_mapping(value)) {
      return &value->entries;
    }
  }
  return &root->entries;
}

}  // namespace

TorchBinFile torch_bin_read(const std::string& path) { return torch_bin_parse(MappedFile::open(path)); }

size_t torch_bin_verify(const MappedFile& file) {
  const std::vector<ZipEntry> entries = zip_list(file);
  for (const auto& entry : entries) zip_verify(file, entry);
  return entries.size();
}

TorchBinFile torch_bin_parse(std::shared_ptr<const MappedFile> file, bool verify_pickle) {
  const std::string& path = file->path();
  if (!zip_has_magic(*file)) {
    if (file->size() >= 2 && file->data()[0] == 0x80) {
      fail(
          "{}: legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it with a current PyTorch "
          "or convert it to safetensors",
          path);
    }
    fail("{}: not a PyTorch zip checkpoint (no zip signature)", path);
  }
  const std::vector<ZipEntry> entries = zip_list(*file);
  const ZipEntry* pickle = nullptr;
  for (const auto& entry : entries) {
    const std::string suffix = "data.pkl";
    if (entry.name.size() >= suffix.size() && entry.name.compare(entry.name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        entry.name.find('/') == entry.name.size() - suffix.size() - 1) {
      pickle = &entry;
    }
  }
  if (pickle == nullptr) fail("{}: zip archive has no <archive>/data.pkl: not a torch.save file", path);
  if (pickle->method != 0) fail("{}: data.pkl is compressed; torch.save stores it uncompressed", path);
  const std::string prefix = pickle->name.substr(0, pickle->name.size() - 8);
  for (const auto& entry : entries) {
    if (entry.name == prefix + "byteorder" && entry.method == 0) {
      std::string order(reinterpret_cast<const char*>(file->data() + entry.data_offset), entry.size);
      if (order != "little") fail("{}: byte order '{}' is not supported (little-endian only)", path, order);
    }
  }
  if (verify_pickle) zip_verify(*file, *pickle);  // a flipped bit there would silently change names, shapes or offsets
  auto root = pickle_load(file->data() + pickle->data_offset, pickle->size, path + ": data.pkl");
  const auto* items = state_dict_entries(root->root);
  if (items == nullptr) fail("{}: the pickled object is not a state dict (a mapping of names to tensors)", path);

  TorchBinFile out;
  out.file = file;
  StateDictReader reader(file, prefix, entries);
  for (const auto& [key, value] : *items) {
    if (key->kind != Kind::String) fail("{}: state dict key is not a string", path);
    if (auto record = reader.tensor(key->text, value)) {
      out.tensors.push_back(std::move(*record));
    } else {
      out.skipped.push_back(key->text);
    }
  }
  return out;
}

}  // namespace m3d::io
