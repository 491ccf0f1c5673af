// volume_io.h through ITK 5.2 (ImageIOFactory: NIfTI, NRRD, MetaImage, PNG, JPEG;
// GDCM for DICOM) and our own .npy reader. The header is read first so absurd
// sizes are refused before any voxel is allocated.
#include "imaging/volume_io.h"

#include <gdcmAttribute.h>
#include <gdcmReader.h>
#include <gdcmScanner.h>
#include <itkGDCMImageIO.h>
#include <itkGDCMSeriesFileNames.h>
#include <itkImage.h>
#include <itkImageFileReader.h>
#include <itkImageFileWriter.h>
#include <itkImageIOFactory.h>
#include <itkImageSeriesReader.h>
#include <itkMetaDataObject.h>
#include <itkRGBAPixel.h>
#include <itkRGBPixel.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "imaging/image_check.h"
#include "imaging/nifti.h"
#include "core/output_guard.h"
#include "core/strings.h"
#include "io/atomic_file.h"
#include "io/mapped_file.h"
#include "io/npy.h"
#include "m3d/error.h"

namespace m3d::imaging {
namespace {

namespace fs = std::filesystem;
using IOComponent = itk::IOComponentEnum;

std::string format_of(const std::string& path) {
  const std::string p = ascii_lower(path);
  if (ends_with(p, ".nii") || ends_with(p, ".nii.gz")) return "nifti";
  if (ends_with(p, ".nrrd") || ends_with(p, ".nhdr")) return "nrrd";
  if (ends_with(p, ".mha") || ends_with(p, ".mhd")) return "metaimage";
  if (ends_with(p, ".dcm") || ends_with(p, ".dicom")) return "dicom";
  return "image";
}

// The voxel type a component type is read as (unsigned 16/32-bit widen: no such torch dtypes).
DType dtype_for(IOComponent component, const std::string& path) {
  switch (component) {
    case IOComponent::UCHAR:
      return DType::U8;
    case IOComponent::CHAR:
      return DType::I8;
    case IOComponent::SHORT:
      return DType::I16;
    case IOComponent::USHORT:
    case IOComponent::INT:
      return DType::I32;
    case IOComponent::UINT:
    case IOComponent::LONG:
    case IOComponent::ULONG:
    case IOComponent::LONGLONG:
    case IOComponent::ULONGLONG:
      return DType::I64;
    case IOComponent::FLOAT:
      return DType::F32;
    case IOComponent::DOUBLE:
      return DType::F64;
    default:
      fail("{}: voxel component type '{}' is not supported", path, itk::ImageIOBase::GetComponentTypeAsString(component));
  }
}

template <typename T>
void copy_image(const typename itk::Image<T, 3>::Pointer& image, RawVolume& out) {
  const auto region = image->GetLargestPossibleRegion().GetSize();
  for (int d = 0; d < 3; ++d) out.size[d] = static_cast<int64_t>(region[d]);
  const size_t bytes = static_cast<size_t>(out.voxels()) * sizeof(T);
  out.data.resize(bytes);
  std::memcpy(out.data.data(), image->GetBufferPointer(), bytes);
  const auto spacing = image->GetSpacing();
  const auto origin = image->GetOrigin();
  const auto direction = image->GetDirection();
  for (int r = 0; r < 3; ++r) {
    out.geometry.spacing[r] = spacing[r];
    out.geometry.origin[r] = origin[r];
    for (int c = 0; c < 3; ++c) out.geometry.direction[r * 3 + c] = direction(r, c);
  }
}

// Reads `path` (one file) or the series `files` as pixel type T.
template <typename T>
void read_as(const std::string& path, const std::vector<std::string>& files, itk::ImageIOBase* io, RawVolume& out) {
  using Image = itk::Image<T, 3>;
  typename Image::Pointer image;
  if (files.empty()) {
    auto reader = itk::ImageFileReader<Image>::New();
    reader->SetImageIO(io);
    reader->SetFileName(path);
    reader->Update();
    image = reader->GetOutput();
  } else {
    auto reader = itk::ImageSeriesReader<Image>::New();
    reader->SetImageIO(io);
    reader->SetFileNames(files);
    reader->Update();
    image = reader->GetOutput();
    // Slice positions along the normal: ITK spaces them evenly (first to last), so say when they are not.
    const auto& direction = image->GetDirection();
    std::vector<double> along;
    for (const auto* dictionary : *reader->GetMetaDataDictionaryArray()) {
      std::string position;
      if (!itk::ExposeMetaData<std::string>(*dictionary, "0020|0032", position)) continue;
      double p[3] = {0, 0, 0};
      if (std::sscanf(position.c_str(), "%lf\\%lf\\%lf", &p[0], &p[1], &p[2]) != 3) continue;
      along.push_back(p[0] * direction(0, 2) + p[1] * direction(1, 2) + p[2] * direction(2, 2));
    }
    if (along.size() > 2) {
      std::sort(along.begin(), along.end());
      double lo = INFINITY, hi = 0;
      for (size_t i = 1; i < along.size(); ++i) lo = std::min(lo, along[i] - along[i - 1]), hi = std::max(hi, along[i] - along[i - 1]);
      if (hi - lo > 1e-3 * hi + 1e-3) {
        out.info.warnings.push_back(fmt::format("slice spacing is not uniform ({:.4g} to {:.4g} mm); the volume uses the mean, {:.4g} mm", lo, hi,
                                                (along.back() - along.front()) / static_cast<double>(along.size() - 1)));
      }
    }
  }
  copy_image<T>(image, out);
}

void read_typed(const std::string& path, const std::vector<std::string>& files, itk::ImageIOBase* io, RawVolume& out) {
  switch (out.dtype) {
    case DType::U8:
      read_as<uint8_t>(path, files, io, out);
      break;
    case DType::I8:
      read_as<int8_t>(path, files, io, out);
      break;
    case DType::I16:
      read_as<int16_t>(path, files, io, out);
      break;
    case DType::I32:
      read_as<int32_t>(path, files, io, out);
      break;
    case DType::I64:
      read_as<int64_t>(path, files, io, out);
      break;
    case DType::F32:
      read_as<float>(path, files, io, out);
      break;
    case DType::F64:
      read_as<double>(path, files, io, out);
      break;
    default:
      fail("{}: unsupported voxel type", path);
  }
}

// Checks the header: dimensions, sizes, spacing, and the voxel limit.
void check_header(const std::string& path, itk::ImageIOBase* io, int64_t extra_slices, const ReadOptions& options) {
  const unsigned dims = io->GetNumberOfDimensions();
  if (dims < 2 || dims > 4) fail("{}: a {}-dimensional image is not a volume (2, 3 or 4 dimensions)", path, dims);
  if (io->GetNumberOfComponents() != 1) {
    fail("{}: {} components per voxel ({}); only scalar volumes are supported", path, io->GetNumberOfComponents(),
         itk::ImageIOBase::GetPixelTypeAsString(io->GetPixelType()));
  }
  double total = 1;
  for (unsigned d = 0; d < std::min(dims, 3u); ++d) {
    const auto n = io->GetDimensions(d);
    if (n == 0) fail("{}: dimension {} has size 0", path, d);
    const double s = io->GetSpacing(d);
    if (!std::isfinite(s) || s <= 0) fail("{}: spacing {} along dimension {} is not a positive number", path, s, d);
    total *= static_cast<double>(n);
  }
  total *= static_cast<double>(std::max<int64_t>(extra_slices, 1));
  if (total > static_cast<double>(options.max_voxels)) {
    fail("{}: {:.0f} voxels exceed the limit of {} (raise it with --max-voxels)", path, total, options.max_voxels);
  }
}

std::string meta(const itk::MetaDataDictionary& dictionary, const std::string& key) {
  std::string value;
  itk::ExposeMetaData<std::string>(dictionary, key, value);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\0')) value.pop_back();
  return value;
}

void dicom_files_check(const std::string& where, const std::vector<std::string>& files);

RawVolume read_file(const std::string& path, const ReadOptions& options) {
  itk::ImageIOBase::Pointer io = itk::ImageIOFactory::CreateImageIO(path.c_str(), itk::IOFileModeEnum::ReadMode);
  if (!io) fail("{}: not a medical image m3d can read (NIfTI, DICOM, NRRD, MetaImage, .npy, or a folder of slices)", path);
  io->SetFileName(path);
  io->ReadImageInformation();
  check_header(path, io.GetPointer(), 1, options);
  RawVolume out;
  out.info.path = path;
  out.info.format = io->GetNameOfClass() == std::string("GDCMImageIO") ? "dicom" : format_of(path);
  if (io->GetNumberOfDimensions() == 4) out.info.frames = static_cast<int64_t>(io->GetDimensions(3));
  out.dtype = dtype_for(io->GetComponentType(), path);
  if (dynamic_cast<itk::GDCMImageIO*>(io.GetPointer()) != nullptr) dicom_files_check(path, {path});
  read_typed(path, {}, io.GetPointer(), out);
  if (auto* dicom = dynamic_cast<itk::GDCMImageIO*>(io.GetPointer())) {
    out.info.modality = meta(dicom->GetMetaDataDictionary(), "0008|0060");
    out.info.series_uid = meta(dicom->GetMetaDataDictionary(), "0020|000e");
    out.info.series_description = meta(dicom->GetMetaDataDictionary(), "0008|103e");
    out.info.rescale_slope = dicom->GetRescaleSlope();
    out.info.rescale_intercept = dicom->GetRescaleIntercept();
  }
  return out;
}

struct SeriesScan {
  std::vector<SeriesInfo> series;
  std::map<std::string, std::set<std::pair<std::string, std::string>>> sizes;  // uid -> {(rows, columns)}
};

SeriesScan scan_series(const std::string& dir) {
  const gdcm::Tag uid_tag(0x0020, 0x000e), description_tag(0x0008, 0x103e), modality_tag(0x0008, 0x0060), rows_tag(0x0028, 0x0010), columns_tag(0x0028, 0x0011);
  gdcm::Scanner scanner;
  for (const auto& tag : {uid_tag, description_tag, modality_tag, rows_tag, columns_tag}) scanner.AddTag(tag);
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_regular_file()) files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  scanner.Scan(files);
  SeriesScan out;
  std::map<std::string, SeriesInfo> by_uid;
  for (const auto& file : files) {
    if (!scanner.IsKey(file.c_str())) continue;  // not DICOM
    const char* uid = scanner.GetValue(file.c_str(), uid_tag);
    const char* rows = scanner.GetValue(file.c_str(), rows_tag);
    const char* columns = scanner.GetValue(file.c_str(), columns_tag);
    if (uid == nullptr || rows == nullptr || columns == nullptr) continue;  // no image (SR, RT plan, ...)
    std::string key = uid;
    while (!key.empty() && (key.back() == ' ' || key.back() == '\0')) key.pop_back();
    SeriesInfo& info = by_uid[key];
    info.uid = key;
    if (const char* d = scanner.GetValue(file.c_str(), description_tag)) info.description = d;
    if (const char* m = scanner.GetValue(file.c_str(), modality_tag)) info.modality = m;
    ++info.files;
    out.sizes[key].insert({rows, columns});
  }
  for (auto& [uid, info] : by_uid) {
    for (auto* s : {&info.description, &info.modality}) {
      while (!s->empty() && (s->back() == ' ' || s->back() == '\0')) s->pop_back();
    }
    out.series.push_back(info);
  }
  std::stable_sort(out.series.begin(), out.series.end(), [](const SeriesInfo& a, const SeriesInfo& b) { return a.files > b.files; });
  return out;
}

// A numeric DICOM attribute (US or IS), or `fallback` when absent or empty.
template <uint16_t Group, uint16_t Element>
long dicom_number(const gdcm::DataSet& ds, long fallback) {
  const gdcm::Tag tag(Group, Element);
  if (!ds.FindDataElement(tag) || ds.GetDataElement(tag).IsEmpty()) return fallback;
  gdcm::Attribute<Group, Element> attribute;
  attribute.SetFromDataSet(ds);
  return static_cast<long>(attribute.GetValue());
}

// What ITK's GDCM reader does not check: uncompressed PixelData shorter than
// rows x columns x samples x bytes x frames (ITK zero-fills the rest), and slices whose
// ImagePositionPatient is missing or repeated (ITK then invents a 1 mm spacing).
// Compressed pixel data is checked by its decoder.
void dicom_files_check(const std::string& where, const std::vector<std::string>& files) {
  std::set<std::string> positions;
  for (const auto& file : files) {
    gdcm::Reader reader;
    reader.SetFileName(file.c_str());
    if (!reader.Read()) fail("{}: cannot parse the DICOM file (damaged or truncated)", file);
    const gdcm::DataSet& ds = reader.GetFile().GetDataSet();
    const gdcm::Tag pixel_tag(0x7fe0, 0x0010);
    if (!ds.FindDataElement(pixel_tag)) fail("{}: no pixel data", file);
    const gdcm::DataElement& pixels = ds.GetDataElement(pixel_tag);
    if (const gdcm::ByteValue* bv = pixels.GetByteValue()) {  // uncompressed (encapsulated data has fragments instead)
      const long rows = dicom_number<0x0028, 0x0010>(ds, 0), columns = dicom_number<0x0028, 0x0011>(ds, 0);
      const long samples = dicom_number<0x0028, 0x0002>(ds, 1), bits = dicom_number<0x0028, 0x0100>(ds, 0);
      const long frames = std::max(1L, dicom_number<0x0028, 0x0008>(ds, 1));
      const double needed = static_cast<double>(rows) * columns * samples * frames * bits / 8.0;
      if (static_cast<double>(bv->GetLength()) < needed) {
        fail("{}: pixel data holds {} bytes, {} x {} x {} frame(s) of {} bits need {:.0f}: the file is damaged or truncated", file, bv->GetLength(), rows,
             columns, frames, bits, needed);
      }
    }
    if (files.size() > 1) {
      const gdcm::Tag position_tag(0x0020, 0x0032);
      const gdcm::ByteValue* bv = ds.FindDataElement(position_tag) ? ds.GetDataElement(position_tag).GetByteValue() : nullptr;
      if (bv == nullptr) fail("{}: slice without ImagePositionPatient (0020,0032): the series' slice spacing is unknown", file);
      std::string position(bv->GetPointer(), bv->GetLength());
      while (!position.empty() && (position.back() == ' ' || position.back() == '\0')) position.pop_back();
      if (!positions.insert(position).second) {
        fail("{}: two slices of the series share ImagePositionPatient [{}] (duplicates?): the slice order is ambiguous", where, position);
      }
    }
  }
}

RawVolume read_dicom_dir(const std::string& dir, const ReadOptions& options) {
  const SeriesScan scan = scan_series(dir);
  if (scan.series.empty()) fail("{}: no DICOM image series in this directory", dir);
  const SeriesInfo* chosen = &scan.series.front();
  if (!options.series.empty()) {
    chosen = nullptr;
    for (const auto& s : scan.series) {
      if (s.uid == options.series) chosen = &s;
    }
    if (chosen == nullptr) {
      std::string list;
      for (const auto& s : scan.series) list += fmt::format(" {} ({} files)", s.uid, s.files);
      fail("{}: no series '{}'; the directory has:{}", dir, options.series, list);
    }
  }
  if (scan.sizes.at(chosen->uid).size() > 1) {
    fail("{}: series {} mixes slice sizes ({} different rows x columns); m3d reads one size per series", dir, chosen->uid, scan.sizes.at(chosen->uid).size());
  }
  auto names = itk::GDCMSeriesFileNames::New();
  names->SetUseSeriesDetails(false);
  names->SetDirectory(dir);
  const std::vector<std::string> files = names->GetFileNames(chosen->uid);  // sorted along the slice normal
  if (files.empty()) fail("{}: series {} has no readable slices", dir, chosen->uid);
  dicom_files_check(dir, files);
  auto io = itk::GDCMImageIO::New();
  io->SetFileName(files.front());
  io->ReadImageInformation();
  check_header(dir, io.GetPointer(), static_cast<int64_t>(files.size()), options);
  RawVolume out;
  out.info.path = dir;
  out.info.format = "dicom";
  out.dtype = dtype_for(io->GetComponentType(), dir);
  read_typed(dir, files, io.GetPointer(), out);
  out.info.modality = chosen->modality;
  out.info.series_uid = chosen->uid;
  out.info.series_description = chosen->description;
  out.info.rescale_slope = io->GetRescaleSlope();
  out.info.rescale_intercept = io->GetRescaleIntercept();
  return out;
}

// What ITK's readers do not check (image_check.h), before they see the file.
void file_check(const fs::path& file) {
  const auto bytes = io::MappedFile::open(file.string());
  const std::string ext = ascii_lower(file.extension().string()), format = format_of(file.string());
  if (format == "metaimage" || format == "nrrd") {
    std::shared_ptr<const io::MappedFile> data;
    const auto detached = [&](const std::string& name) {
      const fs::path data_path = file.parent_path() / name;
      std::error_code ec;
      if (!fs::is_regular_file(data_path, ec)) fail("{}: its data file {} does not exist", file.string(), data_path.string());
      data = io::MappedFile::open(data_path.string());
      return std::string_view(reinterpret_cast<const char*>(data->data()), data->size());
    };
    volume_payload_check(bytes->data(), bytes->size(), file.string(), format == "nrrd" ? PayloadKind::kNrrd : PayloadKind::kMetaImage, detached);
    return;
  }
  slice_image_check(bytes->data(), bytes->size(), file.string(),
                    ext == ".png"                     ? ImageKind::kPng
                    : ext == ".jpg" || ext == ".jpeg" ? ImageKind::kJpeg
                                                      : ImageKind::kSniff);
}

// By extension or by the first bytes (ITK's readers probe contents, not names).
bool png_or_jpeg(const std::string& path) {
  const std::string ext = ascii_lower(fs::path(path).extension().string());
  if (ext == ".png" || ext == ".jpg" || ext == ".jpeg") return true;
  std::ifstream in(path, std::ios::binary);
  char head[4] = {};
  in.read(head, 4);
  const auto* u = reinterpret_cast<const uint8_t*>(head);
  return in.gcount() >= 2 && ((u[0] == 0xff && u[1] == 0xd8) || (u[0] == 0x89 && u[1] == 'P' && in.gcount() == 4 && u[2] == 'N' && u[3] == 'G'));
}

// A folder of 2D slice images (M3D-Cap raw layout): sorted by integer file name,
// converted to 8-bit grey as PIL's convert("L"), the most common slice shape kept.
RawVolume read_slice_folder(const std::string& dir, const std::vector<fs::path>& images, const ReadOptions& options) {
  std::vector<std::pair<long long, fs::path>> ordered;
  for (const auto& p : images) {
    const std::string stem = p.stem().string();
    char* end = nullptr;
    const long long n = std::strtoll(stem.c_str(), &end, 10);
    if (stem.empty() || *end != '\0') fail("{}: slice file '{}' is not named by its number (as M3D-Cap's slices are)", dir, p.filename().string());
    ordered.emplace_back(n, p);
  }
  std::sort(ordered.begin(), ordered.end());
  using Rgba = itk::RGBAPixel<uint8_t>;
  using Slice = itk::Image<Rgba, 2>;
  std::vector<std::pair<std::pair<size_t, size_t>, std::vector<uint8_t>>> slices;
  std::map<std::pair<size_t, size_t>, int> counts;
  std::vector<std::pair<size_t, size_t>> first_seen;
  for (const auto& entry : ordered) file_check(entry.second);
  for (const auto& [n, p] : ordered) {
    itk::ImageIOBase::Pointer io = itk::ImageIOFactory::CreateImageIO(p.string().c_str(), itk::IOFileModeEnum::ReadMode);
    if (!io) fail("{}: cannot read the slice image", p.string());
    io->SetFileName(p.string());
    io->ReadImageInformation();
    const unsigned components = io->GetNumberOfComponents();
    auto reader = itk::ImageFileReader<Slice>::New();
    reader->SetFileName(p.string());
    reader->Update();
    const auto size = reader->GetOutput()->GetLargestPossibleRegion().GetSize();
    const std::pair<size_t, size_t> shape{size[1], size[0]};  // rows, columns
    std::vector<uint8_t> grey(size[0] * size[1]);
    const Rgba* pixels = reader->GetOutput()->GetBufferPointer();
    for (size_t i = 0; i < grey.size(); ++i) {
      const Rgba& px = pixels[i];
      grey[i] = components < 3 ? px[0] : static_cast<uint8_t>((px[0] * 19595u + px[1] * 38470u + px[2] * 7471u + 0x8000u) >> 16);  // PIL "L"
    }
    if (!counts.count(shape)) first_seen.push_back(shape);
    ++counts[shape];
    slices.emplace_back(shape, std::move(grey));
  }
  auto best = first_seen.front();
  for (const auto& shape : first_seen) {
    if (counts[shape] > counts[best]) best = shape;
  }
  RawVolume out;
  out.info.path = dir;
  out.info.format = "slices";
  out.dtype = DType::U8;
  out.size = {static_cast<int64_t>(best.second), static_cast<int64_t>(best.first), counts[best]};
  if (static_cast<double>(out.voxels()) > static_cast<double>(options.max_voxels)) {
    fail("{}: {} voxels exceed the limit of {}", dir, out.voxels(), options.max_voxels);
  }
  for (const auto& [shape, grey] : slices) {
    if (shape == best) out.data.insert(out.data.end(), grey.begin(), grey.end());
  }
  return out;
}

RawVolume read_npy(const std::string& path, const ReadOptions& options) {
  const io::NpyFile npy = io::npy_read(path);
  std::vector<int64_t> shape = npy.array.shape;
  while (shape.size() > 3 && shape.front() == 1) shape.erase(shape.begin());
  if (shape.size() != 3) fail("{}: expected a D x H x W array (optionally with leading 1s), got {} dimensions", path, npy.array.shape.size());
  if (npy.array.dtype == DType::BOOL || npy.array.dtype == DType::F16 || npy.array.dtype == DType::BF16) {
    fail("{}: dtype {} is not a volume type", path, dtype_name(npy.array.dtype));
  }
  RawVolume out;
  out.info.path = path;
  out.info.format = "npy";
  out.dtype = npy.array.dtype;
  out.size = {shape[2], shape[1], shape[0]};
  if (out.voxels() == 0) fail("{}: empty volume (shape [{}])", path, fmt::join(npy.array.shape, ", "));
  if (static_cast<double>(out.voxels()) > static_cast<double>(options.max_voxels)) {
    fail("{}: {} voxels exceed the limit of {}", path, out.voxels(), options.max_voxels);
  }
  if (!npy.array.is_contiguous()) fail("{}: Fortran-order arrays are not supported; save with np.ascontiguousarray", path);
  out.data.assign(npy.array.data, npy.array.data + npy.array.nbytes());
  return out;
}

template <typename T>
void write_as(const std::string& path, const RawVolume& volume) {
  using Image = itk::Image<T, 3>;
  auto image = Image::New();
  typename Image::RegionType region;
  typename Image::SizeType size;
  for (int d = 0; d < 3; ++d) size[d] = static_cast<itk::SizeValueType>(volume.size[d]);
  region.SetSize(size);
  image->SetRegions(region);
  typename Image::SpacingType spacing;
  typename Image::PointType origin;
  typename Image::DirectionType direction;
  for (int r = 0; r < 3; ++r) {
    spacing[r] = volume.geometry.spacing[r];
    origin[r] = volume.geometry.origin[r];
    for (int c = 0; c < 3; ++c) direction(r, c) = volume.geometry.direction[r * 3 + c];
  }
  image->SetSpacing(spacing);
  image->SetOrigin(origin);
  image->SetDirection(direction);
  image->Allocate();
  std::memcpy(image->GetBufferPointer(), volume.data.data(), volume.data.size());
  auto writer = itk::ImageFileWriter<Image>::New();
  writer->SetFileName(path);
  writer->SetInput(image);
  writer->SetUseCompression(!ends_with(ascii_lower(path), ".nii"));
  writer->Update();
}

// The reason in one line: MetaIO's first line when it printed one, else ITK's text
// without its "ITK ERROR: NrrdImageIO(0x55d0...): " prefix, and of teem's chain of
// "[nrrd] function: ..." messages only the last, innermost one.
std::string itk_reason(const itk::ExceptionObject& e, const std::string& printed) {
  static const std::regex itk_prefix(R"((ITK ERROR|itk::ERROR): \w+\(0x[0-9a-fA-F]+\): )"), caller(R"(^(\w+: )+)");
  std::string what = printed.empty() ? std::string(e.GetDescription()) : printed.substr(0, printed.find('\n'));
  what = std::regex_replace(what, itk_prefix, "");
  if (const size_t teem = what.rfind("[nrrd] "); teem != std::string::npos) what = what.substr(teem + 7);
  std::replace(what.begin(), what.end(), '\n', ' ');
  while (!what.empty() && std::isspace(static_cast<unsigned char>(what.back()))) what.pop_back();
  return std::regex_replace(what, caller, "");
}

}  // namespace

RawVolume volume_read(const std::string& path, const ReadOptions& options) {
  itk::Object::GlobalWarningDisplayOff();  // findings such as uneven slice spacing come back in info.warnings
  std::error_code ec;
  if (!fs::exists(path, ec)) fail("{}: no such file or directory", path);
  // .npy and NIfTI are read by m3d's own code; the rest goes through ITK / GDCM.
  const CerrCaptured captured(fs::is_directory(path, ec) || (!ends_with(ascii_lower(path), ".npy") && format_of(path) != "nifti"));
  RawVolume out = [&]() -> RawVolume {
    try {
      if (fs::is_directory(path)) {
        std::vector<fs::path> images;
        bool other = false;
        for (const auto& entry : fs::directory_iterator(path)) {
          if (!entry.is_regular_file()) continue;
          const std::string ext = ascii_lower(entry.path().extension().string());
          if (ext == ".png" || ext == ".jpg" || ext == ".jpeg") images.push_back(entry.path());
          else other = true;
        }
        if (!images.empty() && !other) return read_slice_folder(path, images, options);
        return read_dicom_dir(path, options);
      }
      if (ends_with(ascii_lower(path), ".npy")) return read_npy(path, options);
      if (format_of(path) == "nifti") return nifti_read(path, options);
      if (png_or_jpeg(path) || format_of(path) == "metaimage" || format_of(path) == "nrrd") file_check(path);  // before ITK's probes see it
      return read_file(path, options);
    } catch (const itk::ExceptionObject& e) { fail("{}: cannot read the image: {}", path, itk_reason(e, captured.text())); }
  }();
  // What a reader printed without failing is kept where `volume info` shows it.
  if (const std::string printed = captured.text(); !printed.empty()) out.info.warnings.push_back(printed.substr(0, printed.find('\n')));
  return out;
}

std::vector<SeriesInfo> dicom_series_list(const std::string& dir) {
  if (!fs::is_directory(dir)) fail("{}: not a directory", dir);
  return scan_series(dir).series;
}

void volume_write(const std::string& path, const RawVolume& volume) {
  const std::string format = format_of(path);
  if (format != "nifti" && format != "nrrd" && format != "metaimage") fail("{}: write .nii, .nii.gz, .nrrd or .mha", path);
  if (volume.data.size() != static_cast<size_t>(volume.voxels()) * dtype_size(volume.dtype)) {
    fail("{}: volume data holds {} bytes, expected {}", path, volume.data.size(), volume.voxels() * dtype_size(volume.dtype));
  }
  const auto write = [&](const std::string& temp) {
    // niftilib prints its own "** ERROR: NWAD: wrote only ..." on a failed write; the
    // read-back check below reports the failure as one m3d error instead.
    const StderrMuted muted;
    try {
      switch (volume.dtype) {
        case DType::U8:
          write_as<uint8_t>(temp, volume);
          break;
        case DType::I16:
          write_as<int16_t>(temp, volume);
          break;
        case DType::I32:
          write_as<int32_t>(temp, volume);
          break;
        case DType::F32:
          write_as<float>(temp, volume);
          break;
        case DType::F64:
          write_as<double>(temp, volume);
          break;
        default:
          fail("{}: cannot write voxels of type {} (U8, I16, I32, F32, F64)", path, dtype_name(volume.dtype));
      }
    } catch (const itk::ExceptionObject& e) { fail("{}: cannot write the image: {}", path, replace_all(itk_reason(e, ""), temp, path)); }
  };
  // ITK's writers do not all report failed writes (a full disk can leave a short
  // file): the written file is read back and must hold exactly these voxels.
  const auto check = [&](const std::string& temp) {
    RawVolume back;
    try {
      ReadOptions options;
      options.max_voxels = std::max<int64_t>(options.max_voxels, volume.voxels());
      back = volume_read(temp, options);
    } catch (const Error& e) { fail("{}: the written file does not read back (disk full?): {}", path, e.what()); }
    if (back.size != volume.size || back.dtype != volume.dtype || back.data != volume.data) {
      fail("{}: the written file does not read back as the volume written (disk full?)", path);
    }
  };
  io::write_via_temp(path, write, check);
}

}  // namespace m3d::imaging
