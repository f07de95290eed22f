// The data pipeline on the real CROHME data in ../shared/data (or $HMER_SHARED_DATA): sample counts,
// dictionary coverage, InkML rendering against the official offline images, LaTeX tokenisation
// against the official captions, and loader throughput. Skips, saying why, when the data is absent.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

#include "core/rng.h"
#include "tests/testing.h"
#include "data/dataset.h"
#include "data/inkml.h"
#include "data/latex_tokenizer.h"
#include "data/loader.h"
#include "data/render.h"
#include "data/vocab.h"

using namespace hmer;
using namespace hmer::data;
using hmer::test::shared_data;
namespace fs = std::filesystem;

namespace {

#define REQUIRE_DATA(rel)                                                                              \
  const std::string required_path_ = shared_data() + "/" + (rel);                                     \
  if (!fs::exists(required_path_))                                                                    \
  GTEST_SKIP() << "real CROHME data not found at " << required_path_                                  \
               << " (set HMER_SHARED_DATA to the directory holding crohme/ and crohme_inkml/)"

std::map<std::string, std::string> read_captions(const std::string& path) {
  std::map<std::string, std::string> m;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t tab = line.find('\t');
    if (tab == std::string::npos) continue;
    m[line.substr(0, tab)] = join_tokens(split_tokens(line.substr(tab + 1)));
  }
  return m;
}

std::vector<std::string> inkml_files(const std::string& dir) {
  std::vector<std::string> v;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().extension() == ".inkml") v.push_back(e.path().string());
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace

TEST(CrohmeData, LoadsTrainAnd2014WithEveryTokenMapped) {
  REQUIRE_DATA("crohme/train/caption.txt");
  const std::string root = shared_data() + "/crohme";
  const Vocabulary can = Vocabulary::can_builtin();
  const Vocabulary wap = Vocabulary::from_file(root + "/dictionary_wap_111.txt", VocabFormat::Wap);
  EXPECT_EQ(wap.size(), 111);
  EXPECT_EQ(wap.token(wap.eos_id()), "<eol>");
  const std::map<std::string, int64_t> expected = {{"train", 8835}, {"2014", 986}};
  for (const auto& [split, n] : expected) {
    Dataset d = Dataset::load_comer(root + "/" + split);
    ASSERT_EQ(static_cast<int64_t>(d.size()), n) << split;
    int64_t limits = 0;
    for (size_t i = 0; i < d.size(); ++i)
      limits += std::count(d.info(i).tokens.begin(), d.info(i).tokens.end(), "\\limits");
    // CAN: the built-in dictionary with `\limits` dropped; every token must map (policy error).
    Dataset dc = d;
    const UnknownTokenReport r = dc.encode(can, VocabConfig::can_default());
    EXPECT_EQ(r.tokens, 0) << r.str();
    EXPECT_EQ(static_cast<int64_t>(dc.size()), n);
    // WAP's own dictionary holds every caption token as is.
    Dataset dw = d;
    VocabConfig wc;
    wc.format = VocabFormat::Wap;
    EXPECT_EQ(dw.encode(wap, wc).tokens, 0);
    // Without the mapping rule CAN's dictionary misses exactly the `\limits` tokens.
    Dataset dn = d;
    VocabConfig strict = VocabConfig::can_default();
    strict.token_map.clear();
    strict.on_unknown = UnknownTokenPolicy::SkipSample;
    const UnknownTokenReport rn = dn.encode(can, strict);
    EXPECT_EQ(rn.tokens, limits);
    std::printf("DATA split=%s samples=%zu limits_tokens=%lld samples_with_limits=%lld\n", split.c_str(), d.size(),
                static_cast<long long>(limits), static_cast<long long>(rn.samples));
    // Headers agree with the decoded images, and the polarity is white ink on black: CAN's input
    // (255 - p) / 255 averages close to 1 (can-model.md §15 item 4).
    double mean_in = 0;
    const size_t k = std::min<size_t>(d.size(), 50);
    for (size_t i = 0; i < k; ++i) {
      const cv::Mat m = d.image(i * (d.size() / k));
      const auto [h, w] = read_image_header_size(d.info(i * (d.size() / k)).image_path);
      EXPECT_EQ(h, m.rows);
      EXPECT_EQ(w, m.cols);
      mean_in += 1.0 - cv::mean(m)[0] / 255.0;
    }
    mean_in /= static_cast<double>(k);
    std::printf("DATA split=%s mean_can_input=%.3f\n", split.c_str(), mean_in);
    EXPECT_GT(mean_in, 0.8);
  }
}

TEST(CrohmeData, Inkml2014RendersLikeTheOfficialImagesAndTokenisesLikeTheCaptions) {
  REQUIRE_DATA("crohme_inkml/2014");
  const std::string img_dir = shared_data() + "/crohme/2014/img";
  const auto captions = read_captions(shared_data() + "/crohme/2014/caption.txt");
  const auto files = inkml_files(shared_data() + "/crohme_inkml/2014");
  ASSERT_EQ(files.size(), 986u);
  const RenderOptions ro;
  const LatexTokenizerOptions lo;
  int64_t n = 0, h_ok = 0, w_ok = 0, h_ok20 = 0, tok_ok = 0, tok_n = 0;
  std::vector<double> ratios;
  std::vector<std::string> misses;
  double ink_ours = 0, ink_theirs = 0;
  for (const auto& f : files) {
    const std::string name = fs::path(f).stem().string();
    const InkDocument doc = read_inkml(f);
    // Tokenisation.
    const auto cap = captions.find(name);
    ASSERT_NE(cap, captions.end()) << name;
    ++tok_n;
    std::string got;
    try {
      got = join_tokens(tokenize_latex(doc.truth(), lo, f));
    } catch (const Error& e) {
      got = std::string("<error: ") + e.what() + ">";
    }
    if (got == cap->second) ++tok_ok;
    else misses.push_back(name + "\n    truth:   " + doc.truth() + "\n    ours:    " + got + "\n    caption: " + cap->second);
    // Rendering.
    const cv::Mat ours = render_strokes(doc.strokes, ro);
    const cv::Mat theirs = read_gray_image(img_dir + "/" + name + ".png");
    const double r = static_cast<double>(ours.rows) / theirs.rows;
    const double rw = static_cast<double>(ours.cols) / theirs.cols;
    ratios.push_back(r);
    ++n;
    h_ok += std::fabs(r - 1.0) <= 0.3;
    h_ok20 += std::fabs(r - 1.0) <= 0.2;
    w_ok += std::fabs(rw - 1.0) <= 0.3;
    ink_ours += cv::countNonZero(ours) / static_cast<double>(ours.total());
    ink_theirs += cv::countNonZero(theirs) / static_cast<double>(theirs.total());
  }
  std::sort(ratios.begin(), ratios.end());
  const double pct_h = 100.0 * h_ok / n, pct_tok = 100.0 * tok_ok / tok_n;
  std::printf("DATA render files=%lld height_within_30pct=%.1f%% height_within_20pct=%.1f%% width_within_30pct=%.1f%% "
              "height_ratio p5=%.3f p50=%.3f p95=%.3f ink_fraction ours=%.4f official=%.4f\n",
              static_cast<long long>(n), pct_h, 100.0 * h_ok20 / n, 100.0 * w_ok / n, ratios[n / 20], ratios[n / 2],
              ratios[n * 19 / 20], ink_ours / n, ink_theirs / n);
  std::printf("DATA tokenise files=%lld equal_to_caption=%lld (%.1f%%) misses=%zu\n", static_cast<long long>(tok_n),
              static_cast<long long>(tok_ok), pct_tok, misses.size());
  for (const auto& m : misses) std::printf("DATA miss %s\n", m.c_str());
  EXPECT_GE(pct_h, 90.0);
  EXPECT_GE(pct_tok, 97.0);
}

TEST(CrohmeData, TrainSampleInkmlAcrossCollections) {
  REQUIRE_DATA("crohme_inkml/train_sample");
  const auto captions = read_captions(shared_data() + "/crohme/train/caption.txt");
  const std::string img_dir = shared_data() + "/crohme/train/img";
  LatexTokenizerOptions lo;
  lo.keep_limits = true;  // the train captions keep `\limits`
  const RenderOptions ro;
  std::map<std::string, std::array<int64_t, 4>> per;  // collection -> {files, captioned, equal, height ok}
  for (const auto& f : inkml_files(shared_data() + "/crohme_inkml/train_sample")) {
    const std::string coll = fs::path(f).parent_path().filename().string();
    const std::string name = fs::path(f).stem().string();
    auto& c = per[coll];
    const InkDocument doc = read_inkml(f);  // every file must parse
    ++c[0];
    const cv::Mat ours = render_strokes(doc.strokes, ro);
    EXPECT_GT(ours.rows, 20) << f;
    const auto cap = captions.find(name);
    if (cap == captions.end()) continue;
    ++c[1];
    std::string got;
    try {
      got = join_tokens(tokenize_latex(doc.truth(), lo, f));
    } catch (const Error& e) {
      got = e.what();
    }
    if (got == cap->second) ++c[2];
    else std::printf("DATA train_sample miss %s/%s\n    truth:   %s\n    ours:    %s\n    caption: %s\n", coll.c_str(),
                     name.c_str(), doc.truth().c_str(), got.c_str(), cap->second.c_str());
    const auto [h, w] = read_image_header_size(img_dir + "/" + name + ".png");
    if (h > 0 && std::fabs(static_cast<double>(ours.rows) / h - 1.0) <= 0.3) ++c[3];
  }
  int64_t files = 0, capd = 0, eq = 0, hok = 0;
  for (const auto& [coll, c] : per) {
    std::printf("DATA train_sample %s files=%lld captioned=%lld tokens_equal=%lld height_within_30pct=%lld\n",
                coll.c_str(), static_cast<long long>(c[0]), static_cast<long long>(c[1]), static_cast<long long>(c[2]),
                static_cast<long long>(c[3]));
    files += c[0];
    capd += c[1];
    eq += c[2];
    hok += c[3];
  }
  std::printf("DATA train_sample total files=%lld captioned=%lld tokens_equal=%lld height_within_30pct=%lld\n",
              static_cast<long long>(files), static_cast<long long>(capd), static_cast<long long>(eq),
              static_cast<long long>(hok));
  // Every file of the six collections parses and renders; the tokeniser and the renderer carry over
  // from the 2014 test files to the training collections (different units and conventions).
  EXPECT_GE(files, 200);
  EXPECT_GE(eq, capd * 95 / 100);
  EXPECT_GE(hok, capd * 90 / 100);
}

TEST(CrohmeData, InkmlDirectoryDataset) {
  REQUIRE_DATA("crohme_inkml/2014");
  DatasetConfig cfg;
  cfg.layout = DatasetLayout::Inkml;
  cfg.skip_bad_samples = true;
  Dataset d = Dataset::load_inkml_dir(shared_data() + "/crohme_inkml/2014", cfg);
  std::printf("DATA inkml_dataset samples=%zu skipped=%zu\n", d.size(), d.skipped().size());
  for (const auto& s : d.skipped()) std::printf("DATA inkml_dataset skipped: %s\n", s.c_str());
  EXPECT_GE(d.size(), 980u);
  VocabConfig vc = VocabConfig::can_default();
  vc.on_unknown = UnknownTokenPolicy::SkipSample;
  const UnknownTokenReport r = d.encode(Vocabulary::can_builtin(), vc);
  std::printf("DATA inkml_dataset after CAN encode samples=%zu %s\n", d.size(), r.str().c_str());
  const cv::Mat m = d.image(0);
  EXPECT_EQ(m.type(), CV_8UC1);
}

TEST(CrohmeData, LoaderThroughputBatch8) {
  REQUIRE_DATA("crohme/train/caption.txt");
  auto d = std::make_shared<Dataset>(Dataset::load_comer(shared_data() + "/crohme/train"));
  const Vocabulary can = Vocabulary::can_builtin();
  d->encode(can, VocabConfig::can_default());
  const int64_t kBatches = 150;
  for (int prefetch : {0, 2}) {
    LoaderConfig lc;
    lc.batch_size = 8;
    lc.prefetch = prefetch;
    DataLoader loader(d, can, lc, PreprocessConfig::can());
    EXPECT_EQ(loader.batches_per_epoch(), 1105);  // ceil(8835 / 8), as in CAN
    const auto t0 = std::chrono::steady_clock::now();
    Batch b;
    int64_t images = 0, skipped = 0, pixels = 0;
    for (int64_t i = 0; i < kBatches; ++i) {
      ASSERT_TRUE(loader.next(b));
      images += b.size();
      skipped += static_cast<int64_t>(b.skipped.size());
      pixels += b.images.numel();
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("DATA loader batch=8 prefetch=%d batches=%lld images=%lld skipped=%lld time=%.3fs "
                "images_per_s=%.0f batches_per_s=%.1f mean_batch_pixels=%.0f\n",
                prefetch, static_cast<long long>(kBatches), static_cast<long long>(images),
                static_cast<long long>(skipped), s, images / s, kBatches / s, static_cast<double>(pixels) / kBatches);
  }
  // Padding over one epoch from the header sizes (no decoding): CAN's plain shuffle vs area buckets.
  std::vector<std::pair<int, int>> hw(d->size());
  for (size_t i = 0; i < d->size(); ++i) hw[i] = read_image_header_size(d->info(i).image_path);
  for (bool bucket : {false, true}) {
    LoaderConfig lc;
    lc.bucket_by_area = bucket;
    DataLoader loader(d, can, lc, PreprocessConfig::can());
    Generator g(lc.seed);
    int64_t padded = 0, real = 0;
    for (const auto& b : loader.plan_epoch(g)) {
      int64_t mh = 0, mw = 0;
      for (int64_t i : b) {
        mh = std::max<int64_t>(mh, hw[i].first);
        mw = std::max<int64_t>(mw, hw[i].second);
        real += static_cast<int64_t>(hw[i].first) * hw[i].second;
      }
      padded += mh * mw * static_cast<int64_t>(b.size());
    }
    std::printf("DATA epoch padding bucket_by_area=%d batch_pixels=%lld image_pixels=%lld padding_fraction=%.3f\n",
                bucket, static_cast<long long>(padded), static_cast<long long>(real), 1.0 - double(real) / padded);
  }
}
