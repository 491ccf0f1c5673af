// See nifti.h. Header layouts: nifti1.h and nifti2.h (NIfTI-1: sizeof_hdr 348, dim
// int16[8] at 40, datatype at 70, pixdim float[8] at 76, vox_offset at 108,
// scl_slope/inter at 112/116, qform/sform codes at 252/254, quatern b-d at 256,
// qoffset at 268, srow_x/y/z at 280/296/312, magic "n+1" at 344. NIfTI-2:
// sizeof_hdr 540, magic "n+2" at 4, datatype at 12, dim int64[8] at 16, pixdim
// double[8] at 104, vox_offset int64 at 168, scl_slope/inter at 176/184,
// qform/sform codes int32 at 344/348, quatern at 352, qoffset at 376, srow at 400).
#include "imaging/nifti.h"

#include <libdeflate.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "io/mapped_file.h"
#include "m3d/error.h"

namespace m3d::imaging {
namespace {

template <typename T>
T load(const uint8_t* p, bool swap) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, p, sizeof(T));
  if (swap) std::reverse(b, b + sizeof(T));
  T value;
  std::memcpy(&value, b, sizeof(T));
  return value;
}

struct TypeInfo {
  DType stored;  // as read (unsigned 16/32 widen)
  size_t bytes;  // in the file
  bool is_unsigned;
};

TypeInfo type_info(int datatype, const std::string& name) {
  switch (datatype) {
    case 2:
      return {DType::U8, 1, true};
    case 4:
      return {DType::I16, 2, false};
    case 8:
      return {DType::I32, 4, false};
    case 16:
      return {DType::F32, 4, false};
    case 64:
      return {DType::F64, 8, false};
    case 256:
      return {DType::I8, 1, false};
    case 512:
      return {DType::I32, 2, true};
    case 768:
      return {DType::I64, 4, true};
    case 1024:
      return {DType::I64, 8, false};
    default:
      fail("{}: NIfTI datatype {} is not supported (integer and real scalar types are)", name, datatype);
  }
}

// Reads every voxel as double (for scaling) or copies it into its stored type.
double read_value(const uint8_t* p, int datatype, bool swap) {
  switch (datatype) {
    case 2:
      return *p;
    case 4:
      return load<int16_t>(p, swap);
    case 8:
      return load<int32_t>(p, swap);
    case 16:
      return load<float>(p, swap);
    case 64:
      return load<double>(p, swap);
    case 256:
      return static_cast<int8_t>(*p);
    case 512:
      return load<uint16_t>(p, swap);
    case 768:
      return load<uint32_t>(p, swap);
    case 1024:
      return static_cast<double>(load<int64_t>(p, swap));
    default:
      return 0;
  }
}

template <typename T>
void store(uint8_t* out, T value) {
  std::memcpy(out, &value, sizeof(T));
}

}  // namespace

NiftiHeader nifti_parse_header(const uint8_t* b, size_t size, const std::string& name) {
  if (size < 348) fail("{}: too short for a NIfTI header ({} bytes)", name, size);
  NiftiHeader h;
  const int32_t sizeof_hdr = load<int32_t>(b, false);
  if (sizeof_hdr == 348 || sizeof_hdr == 540) {
    h.swap = false;
  } else if (load<int32_t>(b, true) == 348 || load<int32_t>(b, true) == 540) {
    h.swap = true;
  } else {
    fail("{}: not a NIfTI file (sizeof_hdr is {}, expected 348 or 540)", name, sizeof_hdr);
  }
  h.version = load<int32_t>(b, h.swap) == 348 ? 1 : 2;
  const bool s = h.swap;
  if (h.version == 1) {
    if (std::memcmp(b + 344, "n+1\0", 4) != 0) { fail("{}: NIfTI-1 magic is not \"n+1\" (header/image pairs and Analyze files are not supported)", name); }
    for (int i = 0; i < 8; ++i) h.dims[i] = load<int16_t>(b + 40 + 2 * i, s);
    h.datatype = load<int16_t>(b + 70, s);
    for (int i = 0; i < 8; ++i) h.pixdim[i] = load<float>(b + 76 + 4 * i, s);
    const float offset = load<float>(b + 108, s);
    if (!std::isfinite(offset) || offset < 0 || offset > 1e9) fail("{}: vox_offset {} is invalid", name, offset);
    h.vox_offset = static_cast<int64_t>(offset);
    h.scl_slope = load<float>(b + 112, s);
    h.scl_inter = load<float>(b + 116, s);
    h.qform_code = load<int16_t>(b + 252, s);
    h.sform_code = load<int16_t>(b + 254, s);
    for (int i = 0; i < 3; ++i) h.quatern[i] = load<float>(b + 256 + 4 * i, s);
    for (int i = 0; i < 3; ++i) h.qoffset[i] = load<float>(b + 268 + 4 * i, s);
    for (int r = 0; r < 3; ++r) {
      for (int c = 0; c < 4; ++c) h.srow[r][c] = load<float>(b + 280 + 16 * r + 4 * c, s);
    }
  } else {
    if (size < 540) fail("{}: too short for a NIfTI-2 header ({} bytes)", name, size);
    if (std::memcmp(b + 4, "n+2\0", 4) != 0) fail("{}: NIfTI-2 magic is not \"n+2\" (header/image pairs are not supported)", name);
    h.datatype = load<int16_t>(b + 12, s);
    for (int i = 0; i < 8; ++i) h.dims[i] = load<int64_t>(b + 16 + 8 * i, s);
    for (int i = 0; i < 8; ++i) h.pixdim[i] = load<double>(b + 104 + 8 * i, s);
    h.vox_offset = load<int64_t>(b + 168, s);
    h.scl_slope = load<double>(b + 176, s);
    h.scl_inter = load<double>(b + 184, s);
    h.qform_code = load<int32_t>(b + 344, s);
    h.sform_code = load<int32_t>(b + 348, s);
    for (int i = 0; i < 3; ++i) h.quatern[i] = load<double>(b + 352 + 8 * i, s);
    for (int i = 0; i < 3; ++i) h.qoffset[i] = load<double>(b + 376 + 8 * i, s);
    for (int r = 0; r < 3; ++r) {
      for (int c = 0; c < 4; ++c) h.srow[r][c] = load<double>(b + 400 + 32 * r + 8 * c, s);
    }
  }
  const int64_t rank = h.dims[0];
  if (rank < 1 || rank > 7) fail("{}: dim[0] = {} is not a valid number of dimensions (1 to 7)", name, rank);
  for (int i = 1; i <= rank; ++i) {
    if (h.dims[i] <= 0) fail("{}: dimension {} has size {}", name, i, h.dims[i]);
  }
  for (int i = static_cast<int>(rank) + 1; i < 8; ++i) h.dims[i] = 1;
  for (int i = 1; i <= std::min<int64_t>(rank, 3); ++i) {
    if (!std::isfinite(h.pixdim[i])) fail("{}: pixdim[{}] = {} is not a number", name, i, h.pixdim[i]);
  }
  if (h.vox_offset < (h.version == 1 ? 348 : 540)) h.vox_offset = h.version == 1 ? 352 : 544;
  type_info(h.datatype, name);
  return h;
}

std::array<double, 16> nifti_affine(const NiftiHeader& h) {
  std::array<double, 16> a{};
  a[15] = 1;
  if (h.sform_code > 0) {
    for (int r = 0; r < 3; ++r) {
      for (int c = 0; c < 4; ++c) a[r * 4 + c] = h.srow[r][c];
    }
    return a;
  }
  double zooms[3];
  for (int i = 0; i < 3; ++i) zooms[i] = h.pixdim[i + 1];
  if (h.qform_code > 0) {
    const double b = h.quatern[0], c = h.quatern[1], d = h.quatern[2];
    const double a2 = 1.0 - (b * b + c * c + d * d);
    const double q = a2 < 1e-7 ? 0.0 : std::sqrt(a2);  // nibabel fillpositive
    const double R[3][3] = {{q * q + b * b - c * c - d * d, 2 * (b * c - q * d), 2 * (b * d + q * c)},
                            {2 * (b * c + q * d), q * q + c * c - b * b - d * d, 2 * (c * d - q * b)},
                            {2 * (b * d - q * c), 2 * (c * d + q * b), q * q + d * d - c * c - b * b}};
    const double qfac = h.pixdim[0] < 0 ? -1.0 : 1.0;
    const double scale[3] = {zooms[0], zooms[1], zooms[2] * qfac};
    for (int r = 0; r < 3; ++r) {
      for (int c2 = 0; c2 < 3; ++c2) a[r * 4 + c2] = R[r][c2] * scale[c2];
      a[r * 4 + 3] = h.qoffset[r];
    }
    return a;
  }
  // Analyze base affine: x flipped, origin at the volume centre.
  const double signs[3] = {-1, 1, 1};
  for (int i = 0; i < 3; ++i) {
    a[i * 4 + i] = signs[i] * zooms[i];
    a[i * 4 + 3] = -signs[i] * zooms[i] * (static_cast<double>(h.dims[i + 1]) - 1) / 2.0;
  }
  return a;
}

RawVolume nifti_decode(const NiftiHeader& h, const uint8_t* data, size_t size, const std::string& name, const ReadOptions& options) {
  const TypeInfo type = type_info(h.datatype, name);
  RawVolume out;
  out.info.path = name;
  out.info.format = "nifti";
  out.size = {h.dims[1], h.dims[2], h.dims[3]};
  double frames = 1;
  for (int i = 4; i < 8; ++i) frames *= static_cast<double>(h.dims[i]);
  out.info.frames = static_cast<int64_t>(frames);
  const double voxels = static_cast<double>(h.dims[1]) * static_cast<double>(h.dims[2]) * static_cast<double>(h.dims[3]);
  if (voxels > static_cast<double>(options.max_voxels)) {
    fail("{}: {:.0f} voxels exceed the limit of {} (raise it with --max-voxels)", name, voxels, options.max_voxels);
  }
  const size_t n = static_cast<size_t>(out.voxels());
  if (size / type.bytes < n) fail("{}: truncated: the first volume needs {} bytes of voxels, the file has {}", name, n * type.bytes, size);

  // Geometry: the RAS affine as LPS origin + direction * spacing. Without an sform the
  // voxel sizes come from pixdim, which must then be positive (nibabel refuses the same).
  if (h.sform_code <= 0) {
    for (int i = 1; i <= 3; ++i) {
      if (!(h.pixdim[i] > 0)) fail("{}: pixdim[{}] = {} is not a positive voxel size", name, i, h.pixdim[i]);
    }
  }
  const auto affine = nifti_affine(h);
  for (int c = 0; c < 3; ++c) {
    double norm = 0;
    for (int r = 0; r < 3; ++r) norm += affine[r * 4 + c] * affine[r * 4 + c];
    norm = std::sqrt(norm);
    if (!(norm > 0) || !std::isfinite(norm)) fail("{}: the affine has a zero or invalid column {}", name, c);
    out.geometry.spacing[c] = norm;
    for (int r = 0; r < 3; ++r) out.geometry.direction[r * 3 + c] = (r < 2 ? -1 : 1) * affine[r * 4 + c] / norm;
  }
  for (int r = 0; r < 3; ++r) out.geometry.origin[r] = (r < 2 ? -1 : 1) * affine[r * 4 + 3];

  const bool scaled = std::isfinite(h.scl_slope) && h.scl_slope != 0 && (h.scl_slope != 1 || (std::isfinite(h.scl_inter) && h.scl_inter != 0));
  if (scaled) {
    out.info.rescale_slope = h.scl_slope;
    out.info.rescale_intercept = std::isfinite(h.scl_inter) ? h.scl_inter : 0;
    out.dtype = type.stored == DType::F64 ? DType::F64 : DType::F32;
  } else {
    out.dtype = type.stored;
  }
  if (!scaled && !h.swap && type.bytes == dtype_size(type.stored)) {  // stored as is: one copy
    out.data.assign(data, data + n * type.bytes);
    return out;
  }
  out.data.resize(n * dtype_size(out.dtype));
  uint8_t* dst = out.data.data();
  const size_t step = dtype_size(out.dtype);
  for (size_t i = 0; i < n; ++i, dst += step) {
    const uint8_t* src = data + i * type.bytes;
    if (scaled) {
      const double v = read_value(src, h.datatype, h.swap) * out.info.rescale_slope + out.info.rescale_intercept;
      if (out.dtype == DType::F64) store<double>(dst, v);
      else store<float>(dst, static_cast<float>(v));
      continue;
    }
    switch (h.datatype) {
      case 512:
        store<int32_t>(dst, load<uint16_t>(src, h.swap));
        break;
      case 768:
        store<int64_t>(dst, load<uint32_t>(src, h.swap));
        break;
      default:
        std::memcpy(dst, src, type.bytes);
        if (h.swap) std::reverse(dst, dst + type.bytes);
    }
  }
  return out;
}

namespace {

// zlib's inflate over `data`, starting a new member (inflateReset) at each member's
// end. Output goes to `out` up to its size, the rest to a scratch
// buffer; returns the bytes produced (all of them, kept or not). With `verify`, every
// member's CRC-32 and length (zlib checks both at the member's end) must hold and the
// input must end with a complete member: a flipped bit or a truncated file is an error.
size_t gunzip_into(const uint8_t* data, size_t size, std::vector<uint8_t>& out, bool verify, const std::string& path) {
  struct Inflater {
    z_stream z{};
    ~Inflater() { inflateEnd(&z); }
  } inflater;
  z_stream& z = inflater.z;
  if (inflateInit2(&z, 15 + 16) != Z_OK) fail("{}: cannot start gzip decompression", path);
  std::vector<uint8_t> scratch(verify ? size_t{1} << 20 : 0);
  size_t in_done = 0, produced = 0;
  bool member_ended = false;
  while (true) {
    const bool keep = produced < out.size();
    if (!keep && !verify) break;
    uint8_t* dst = keep ? out.data() + produced : scratch.data();
    const size_t room = keep ? out.size() - produced : scratch.size();
    const size_t in_chunk = std::min<size_t>(size - in_done, 1u << 30), out_chunk = std::min<size_t>(room, 1u << 30);
    z.next_in = const_cast<Bytef*>(data + in_done);
    z.avail_in = static_cast<uInt>(in_chunk);
    z.next_out = dst;
    z.avail_out = static_cast<uInt>(out_chunk);
    const int rc = inflate(&z, Z_NO_FLUSH);
    in_done += in_chunk - z.avail_in;
    produced += out_chunk - z.avail_out;
    member_ended = rc == Z_STREAM_END;
    if (rc == Z_STREAM_END) {
      // gzip allows several members back to back; zero bytes after the last are padding.
      const bool more = in_done < size && data[in_done] == 0x1f;
      if (!more) {
        for (size_t i = in_done; verify && i < size; ++i) {
          if (data[i] != 0) fail("{}: {} bytes of data after the end of the gzip stream", path, size - in_done);
        }
        break;
      }
      inflateReset(&z);
      continue;
    }
    if (rc == Z_BUF_ERROR && in_done >= size) break;  // input ended inside a member
    if (rc != Z_OK && rc != Z_BUF_ERROR) fail("{}: corrupt gzip data ({}): the file is damaged", path, z.msg ? z.msg : "inflate failed");
  }
  if (verify && !member_ended) fail("{}: truncated gzip file: the stream ends before its end marker and checksum", path);
  return produced;
}

}  // namespace

RawVolume nifti_read(const std::string& path, const ReadOptions& options) {
  const auto file = io::MappedFile::open(path);
  const uint8_t* bytes = file->data();
  const size_t size = file->size();
  const bool gzip = size >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
  // The header first: sizes are checked before the voxels are decompressed or copied.
  std::vector<uint8_t> head(gzip ? 544 : std::min<size_t>(size, 544));
  if (gzip) head.resize(gunzip_into(bytes, size, head, false, path));
  else std::copy(bytes, bytes + head.size(), head.begin());
  const NiftiHeader header = nifti_parse_header(head.data(), head.size(), path);
  const TypeInfo type = type_info(header.datatype, path);
  const double voxels = static_cast<double>(header.dims[1]) * static_cast<double>(header.dims[2]) * static_cast<double>(header.dims[3]);
  if (voxels > static_cast<double>(options.max_voxels)) {
    fail("{}: {:.0f} voxels exceed the limit of {} (raise it with --max-voxels)", path, voxels, options.max_voxels);
  }
  const size_t needed = static_cast<size_t>(header.vox_offset) + static_cast<size_t>(voxels) * type.bytes;
  if (!gzip) {
    if (size < needed)
      fail("{}: truncated: the first volume needs {} bytes of voxels, the file has {}", path, needed - header.vox_offset,
           size > static_cast<size_t>(header.vox_offset) ? size - header.vox_offset : 0);
    return nifti_decode(header, bytes + header.vox_offset, size - header.vox_offset, path, options);
  }
  // The whole stream is decompressed and checked (CRC-32 and length of every member),
  // though only the first volume is kept: with libdeflate at once (about twice zlib's
  // speed) when the file is one member whose trailer (the uncompressed size modulo 2^32)
  // says it is about the first volume's size; otherwise (4D files, several members,
  // streams over 4 GiB, a damaged trailer) streamed through zlib.
  if (size < 18) fail("{}: truncated gzip file", path);
  const size_t trailer = static_cast<size_t>(bytes[size - 4]) | static_cast<size_t>(bytes[size - 3]) << 8 | static_cast<size_t>(bytes[size - 2]) << 16 |
                         static_cast<size_t>(bytes[size - 1]) << 24;
  std::vector<uint8_t> inflated;
  size_t out_size = 0;
  bool done = false;
  if (trailer >= needed && trailer <= needed + (needed >> 2) + (1u << 20)) {
    inflated.resize(trailer);
    libdeflate_decompressor* d = libdeflate_alloc_decompressor();
    size_t in_used = 0;
    const libdeflate_result rc = libdeflate_gzip_decompress_ex(d, bytes, size, inflated.data(), inflated.size(), &in_used, &out_size);
    libdeflate_free_decompressor(d);
    if (rc == LIBDEFLATE_BAD_DATA) fail("{}: corrupt gzip data (checksum or stream error): the file is damaged", path);
    done = rc == LIBDEFLATE_SUCCESS && in_used == size;  // more input: further members, checked by zlib below
  }
  if (!done) {
    inflated.assign(needed, 0);
    out_size = std::min(gunzip_into(bytes, size, inflated, true, path), needed);
  }
  if (out_size < needed) {
    fail("{}: truncated: the first volume needs {} bytes of voxels, the file has {}", path, needed - header.vox_offset,
         out_size > static_cast<size_t>(header.vox_offset) ? out_size - header.vox_offset : 0);
  }
  return nifti_decode(header, inflated.data() + header.vox_offset, out_size - header.vox_offset, path, options);
}

}  // namespace m3d::imaging
