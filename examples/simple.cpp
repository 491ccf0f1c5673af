// The smallest m3d program: a scan in, an answer and its box on the patient's scan
// out. It uses only the public headers (include/m3d/).
//
//   simple MODEL_DIR SCAN [QUESTION] [--box "[d1, h1, w1, d2, h2, w2]"]
//
// The scan (NIfTI, DICOM directory, NRRD, MHA) is prepared as the model was trained
// (the checkpoint's recipe), the question answered greedily, and a box in the
// answer (M3D's positioning output, normalized to the model grid) printed in model
// voxels, scan voxels and LPS millimetres. --box maps a box given by hand (e.g.
// one from an earlier answer) the same way.
#include <m3d/error.h>
#include <m3d/model.h>
#include <m3d/recipe.h>
#include <m3d/session.h>

#include <array>
#include <cstdio>
#include <string>

namespace {

void print_box(const char* label, const m3d::ScanBox& box) {
  const auto& lo = box.mm_min;
  const auto& hi = box.mm_max;
  std::printf("%s model voxels (i, j, k) [%.1f, %.1f, %.1f] to [%.1f, %.1f, %.1f]\n", label, box.model_min[0], box.model_min[1], box.model_min[2],
              box.model_max[0], box.model_max[1], box.model_max[2]);
  std::printf("%s scan voxels (i, j, k) [%.2f, %.2f, %.2f] to [%.2f, %.2f, %.2f]\n", label, box.scan_min[0], box.scan_min[1], box.scan_min[2], box.scan_max[0],
              box.scan_max[1], box.scan_max[2]);
  std::printf("%s LPS mm [%.3f, %.3f, %.3f] to [%.3f, %.3f, %.3f]\n", label, lo[0], lo[1], lo[2], hi[0], hi[1], hi[2]);
}

// "[a, b, c, d, e, f]" (commas and brackets optional) -> six numbers.
bool parse_six(const std::string& text, std::array<double, 6>& out) {
  std::string spaced = text;
  for (char& c : spaced) {
    if (c == '[' || c == ']' || c == ',') c = ' ';
  }
  int used = 0;
  return std::sscanf(spaced.c_str(), "%lf %lf %lf %lf %lf %lf %n", &out[0], &out[1], &out[2], &out[3], &out[4], &out[5], &used) == 6 &&
         used == static_cast<int>(spaced.size());
}

}  // namespace

int main(int argc, char** argv) {
  std::string positional[3], box_text;
  int count = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--box" && i + 1 < argc) {
      box_text = argv[++i];
    } else if (count < 3 && arg.rfind("--", 0) != 0) {
      positional[count++] = arg;
    } else {
      count = -1;
      break;
    }
  }
  if (count < 2) {
    std::fprintf(stderr, "usage: simple MODEL_DIR SCAN [QUESTION] [--box \"[d1, h1, w1, d2, h2, w2]\"]\n");
    return 1;
  }
  const std::string& model_dir = positional[0];
  const std::string& scan_path = positional[1];
  const std::string question = count > 2 ? positional[2] : "Can you find the liver in this image? Give coordinates.";
  try {
    m3d::Model model = m3d::Model::open(model_dir);
    m3d::PrepareOptions prepare;
    prepare.model_dir = model_dir;  // recipe "auto": the one the checkpoint was trained with
    m3d::PreparedScan scan = m3d::PreparedScan::prepare(scan_path, prepare);
    m3d::Session session(model);
    session.set_scan(scan);

    m3d::AskOptions ask;
    ask.sample = false;  // greedy, as M3D-Bench
    ask.max_new_tokens = 32;
    std::printf("answer: ");
    const m3d::Answer answer = session.ask(question, ask, [](const std::string& piece) {
      std::fputs(piece.c_str(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::printf("\n");
    if (answer.box) {
      print_box("answer box:", *answer.box);
    } else {
      std::printf("answer box: none in the answer\n");
    }
    if (!box_text.empty()) {
      std::array<double, 6> given{};
      if (!parse_six(box_text, given)) throw m3d::Error("--box: expected six numbers, got '" + box_text + "'");
      print_box("given box:", scan.box(given));
    }
  } catch (const m3d::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
