// Decodes a TensorRecord's logical values (following its strides) to doubles,
// independently of libtorch, for comparison with the Python reference values.
#pragma once

#include <cmath>
#include <cstring>
#include <vector>

#include "io/tensor_record.h"

namespace m3d::test {

inline double half_to_double(uint16_t h) {
  const int sign = h >> 15, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  double value;
  if (exponent == 0) value = std::ldexp(mantissa, -24);
  else if (exponent == 31) value = mantissa ? NAN : INFINITY;
  else value = std::ldexp(mantissa + 1024, exponent - 25);
  return sign ? -value : value;
}

inline double element(const uint8_t* p, DType dtype) {
  switch (dtype) {
    case DType::F64: {
      double v;
      std::memcpy(&v, p, 8);
      return v;
    }
    case DType::F32: {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case DType::F16: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return half_to_double(v);
    }
    case DType::BF16: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      uint32_t bits = uint32_t{v} << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    case DType::I64: {
      int64_t v;
      std::memcpy(&v, p, 8);
      return static_cast<double>(v);
    }
    case DType::I32: {
      int32_t v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case DType::I16: {
      int16_t v;
      std::memcpy(&v, p, 2);
      return v;
    }
    case DType::I8:
      return static_cast<int8_t>(*p);
    case DType::U8:
      return *p;
    case DType::BOOL:
      return *p != 0;
  }
  return NAN;
}

inline std::vector<double> record_values(const io::TensorRecord& r) {
  std::vector<double> out;
  const int64_t numel = r.numel();
  std::vector<int64_t> index(r.shape.size(), 0);
  for (int64_t n = 0; n < numel; ++n) {
    int64_t offset = 0;
    for (size_t d = 0; d < index.size(); ++d) offset += index[d] * r.strides[d];
    out.push_back(element(r.data + offset * static_cast<int64_t>(dtype_size(r.dtype)), r.dtype));
    for (size_t d = index.size(); d-- > 0;) {
      if (++index[d] < r.shape[d]) break;
      index[d] = 0;
    }
  }
  return out;
}

}  // namespace m3d::test
