#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "core/error.h"
#include "core/rng.h"
#include "optim/factory.h"
#include "optim/what_moved.h"
#include "train/checkpoint.h"
#include "train/divergence.h"
#include "train/evaluator.h"
#include "train/health.h"
#include "train/logging.h"
#include "train/tensorboard.h"

namespace hmer::train {

namespace fs = std::filesystem;

// ---- config ------------------------------------------------------------------------------------

void apply_override(YAML::Node& root, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  HMER_CHECK(eq != std::string::npos && eq > 0, "--set ", assignment, ": expected key=value (e.g. optim.lr=0.5)");
  const std::string key = assignment.substr(0, eq);
  const std::string value = assignment.substr(eq + 1);
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t dot = key.find('.', start);
    parts.push_back(key.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  for (const auto& p : parts) HMER_CHECK(!p.empty(), "--set ", assignment, ": empty component in key '", key, "'");
  YAML::Node parsed;
  try {
    parsed = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    fail("--set ", assignment, ": the value is not valid YAML: ", e.msg);
  }
  if (!parsed || parsed.IsNull()) parsed = YAML::Node(value);
  // yaml-cpp nodes are handles: walk by rebinding a chain of copies, creating maps as needed.
  std::vector<YAML::Node> chain{root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node cur = chain.back();
    HMER_CHECK(cur.IsMap() || cur.IsNull(), "--set ", assignment, ": '", parts[i > 0 ? i - 1 : 0],
               "' is not a map");
    YAML::Node next = cur[parts[i]];
    if (!next || next.IsNull()) {
      cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next = cur[parts[i]];
    }
    HMER_CHECK(next.IsMap(), "--set ", assignment, ": '", parts[i], "' is not a map");
    chain.push_back(next);
  }
  chain.back()[parts.back()] = parsed;
}

namespace {

void check_keys(const YAML::Node& n, const std::string& path, const std::vector<std::string>& allowed,
                const std::string& source) {
  HMER_CHECK(n.IsMap(), "config ", source, ": '", path, "' must be a map");
  for (const auto& kv : n) {
    const std::string k = kv.first.as<std::string>();
    bool ok = false;
    for (const auto& a : allowed) ok = ok || a == k;
    if (!ok) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      const int line = kv.first.Mark().line >= 0 ? kv.first.Mark().line + 1 : -1;
      fail("config ", source, ": unknown key '", path, ".", k, "'", line > 0 ? " at line " + std::to_string(line) : "",
           " (expected one of: ", list, ")");
    }
  }
}

template <class T>
void get(const YAML::Node& n, const std::string& key, T& out, const std::string& path, const std::string& source) {
  if (!n[key]) return;
  try {
    out = n[key].as<T>();
  } catch (const YAML::Exception&) {
    fail("config ", source, ": '", path, ".", key, "' has the wrong type (value '", YAML::Dump(n[key]), "')");
  }
}

data::DatasetConfig dataset_config(const YAML::Node& n, const std::string& path, const std::string& source) {
  try {
    return data::DatasetConfig::from_yaml(n);
  } catch (const Error& e) {
    fail("config ", source, ": ", path, ": ", e.what());
  }
}

}  // namespace

TrainConfig parse_train_config(const YAML::Node& root_in, const std::string& source) {
  HMER_CHECK(root_in && root_in.IsMap(), "config ", source, ": expected a YAML map at the top level");
  TrainConfig cfg;
  cfg.source = source;
  cfg.root = YAML::Clone(root_in);
  YAML::Node model_root = YAML::Clone(root_in);
  const YAML::Node data_n = YAML::Clone(root_in["data"]);
  const YAML::Node train_n = YAML::Clone(root_in["train"]);
  model_root.remove("data");
  model_root.remove("train");
  // A divergence config (hmer divergence) is also a training config: its divergence section is
  // validated here and otherwise belongs to that command.
  if (model_root["divergence"]) (void)take_divergence_settings(model_root, source);
  cfg.model = models::parse_config(model_root, source, "");

  // ---- data ----
  // Without data.train, the official keys (train_label_path + train_image_path, CAN layout) are used.
  const models::RunConfig& run = cfg.model.run;
  auto official = [&](const std::string& labels, const std::string& images, const char* what) {
    HMER_CHECK(images.size() < 4 || images.substr(images.size() - 4) != ".pkl", "config ", source, ": ", what,
               " is a pickle (", images, "): convert it with tools/can_pickle_to_files.py and point the key at the "
               "image folder, or give data.", std::string(what).find("train") == 0 ? "train" : "valid",
               " (e.g. {layout: comer, root: DIR})");
    data::DatasetConfig d;
    d.layout = data::DatasetLayout::Can;
    d.labels_path = labels;
    d.image_dir = images;
    return d;
  };
  if (data_n && !data_n.IsNull())
    check_keys(data_n, "data", {"train", "valid", "valid_limit", "loader"}, source);
  if (data_n && data_n["train"]) {
    cfg.data.train = dataset_config(data_n["train"], "data.train", source);
  } else {
    HMER_CHECK(!run.train_label_path.empty(), "config ", source,
               ": no training data: give data.train (e.g. {layout: comer, root: DIR}) or train_label_path + "
               "train_image_path");
    cfg.data.train = official(run.train_label_path, run.train_image_path, "train_image_path");
  }
  if (data_n && data_n["valid"] && !data_n["valid"].IsNull())
    cfg.data.valid = dataset_config(data_n["valid"], "data.valid", source);
  else if ((!data_n || !data_n["valid"]) && !run.eval_label_path.empty())
    cfg.data.valid = official(run.eval_label_path, run.eval_image_path, "eval_image_path");
  if (data_n) get(data_n, "valid_limit", cfg.data.valid_limit, "data", source);
  cfg.data.loader.batch_size = cfg.model.run.batch_size;
  cfg.data.loader.seed = cfg.model.run.seed;
  if (data_n && data_n["loader"]) {
    const YAML::Node l = data_n["loader"];
    check_keys(l, "data.loader", {"batch_size", "shuffle", "seed", "drop_last", "bucket_by_area", "bucket_window",
                                  "prefetch"}, source);
    YAML::Node merged = YAML::Clone(l);
    if (!merged["batch_size"]) merged["batch_size"] = cfg.model.run.batch_size;
    if (!merged["seed"]) merged["seed"] = cfg.model.run.seed;
    try {
      cfg.data.loader = data::LoaderConfig::from_yaml(merged);
    } catch (const Error& e) {
      fail("config ", source, ": data.loader: ", e.what());
    }
  }
  cfg.data.loader.validate();

  // ---- train ----
  TrainSection& t = cfg.train;
  t.run_dir = "runs/" + cfg.model.run.experiment;
  if (train_n && !train_n.IsNull()) {
    check_keys(train_n, "train", {"run_dir", "eval_every_epochs", "eval_beam", "log_every_steps",
                                  "checkpoint_every_steps", "max_steps", "max_minutes", "nonfinite",
                                  "health_per_param", "stall_ratio", "stall_window", "progress", "device"}, source);
    get(train_n, "run_dir", t.run_dir, "train", source);
    get(train_n, "eval_every_epochs", t.eval_every_epochs, "train", source);
    get(train_n, "eval_beam", t.eval_beam, "train", source);
    get(train_n, "log_every_steps", t.log_every_steps, "train", source);
    get(train_n, "checkpoint_every_steps", t.checkpoint_every_steps, "train", source);
    get(train_n, "max_steps", t.max_steps, "train", source);
    get(train_n, "max_minutes", t.max_minutes, "train", source);
    get(train_n, "health_per_param", t.health_per_param, "train", source);
    get(train_n, "stall_ratio", t.stall_ratio, "train", source);
    get(train_n, "stall_window", t.stall_window, "train", source);
    get(train_n, "progress", t.progress, "train", source);
    std::string nonfinite = "stop";
    get(train_n, "nonfinite", nonfinite, "train", source);
    HMER_CHECK(nonfinite == "stop" || nonfinite == "skip", "config ", source, ": train.nonfinite '", nonfinite,
               "' (expected stop or skip)");
    t.skip_nonfinite = nonfinite == "skip";
    std::string device = "cpu";
    get(train_n, "device", device, "train", source);
    HMER_CHECK(device == "cpu", "config ", source, ": train.device '", device,
               "': only cpu is wired into the trainer so far");
    HMER_CHECK(t.progress == "auto" || t.progress == "tty" || t.progress == "plain" || t.progress == "off",
               "config ", source, ": train.progress '", t.progress, "' (expected auto, tty, plain or off)");
  }
  HMER_CHECK(!t.run_dir.empty(), "config ", source, ": train.run_dir is empty");
  HMER_CHECK(t.eval_every_epochs >= 0 && t.eval_beam >= 1 && t.log_every_steps >= 1 && t.checkpoint_every_steps >= 0 &&
                 t.max_steps >= 0 && t.max_minutes >= 0 && t.stall_window >= 1,
             "config ", source, ": train.* values out of range (eval_every_epochs >= 0, eval_beam >= 1, "
             "log_every_steps >= 1, checkpoint_every_steps >= 0, max_steps >= 0, max_minutes >= 0)");
  HMER_CHECK(cfg.model.run.epochs >= 1, "config ", source, ": epochs must be >= 1");
  // The optimizer section is validated now (unknown keys, wrong types), not at the first step.
  try {
    optim::ParamGroup probe;
    probe.params = {Tensor::zeros({1}).set_requires_grad(true)};
    probe.names = {"probe"};
    optim::build_optim(cfg.model.optim, {probe}, cfg.model.run.epochs);
  } catch (const Error& e) {
    fail("config ", source, ": ", e.what());
  }
  return cfg;
}

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  YAML::Node root = models::read_config_file(path);
  for (const auto& o : overrides) apply_override(root, o);
  return parse_train_config(root, path);
}

std::shared_ptr<data::Dataset> load_encoded_dataset(const data::DatasetConfig& cfg, const data::Vocabulary& vocab,
                                                    const data::VocabConfig& vcfg) {
  auto ds = std::make_shared<data::Dataset>(data::Dataset::load(cfg));
  ds->encode(vocab, vcfg);
  return ds;
}

// ---- the trainer ---------------------------------------------------------------------------------

namespace {

double now_secs() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

const std::vector<std::string>& metric_columns() {
  static const std::vector<std::string> c = {
      "kind", "step", "epoch", "loss", "word_loss", "counting_loss", "lr", "grad_norm", "update_norm",
      "update_ratio", "images_per_sec", "skipped", "exprate", "le1", "le2", "le3", "wer", "n", "elapsed"};
  return c;
}

}  // namespace

struct Trainer::Impl {
  TrainConfig cfg;
  bool resume;
  TrainerHooks hooks;

  std::shared_ptr<models::CanModel> model;
  data::Vocabulary vocab;
  std::shared_ptr<data::Dataset> train_ds, valid_ds;
  std::unique_ptr<data::DataLoader> loader;
  optim::OptimSetup setup;
  RunDir run_dir;
  std::unique_ptr<TextLog> log;
  std::unique_ptr<CsvLogger> csv;
  std::unique_ptr<JsonlLogger> jsonl;
  std::unique_ptr<EventWriter> tb;
  std::unique_ptr<HealthMonitor> health;
  NamedTensors named_params;
  std::vector<Tensor> params;

  int64_t step = 0, skipped = 0;
  double best_exprate = -1;
  double elapsed_before = 0;  // seconds trained before this process (resume)
  // Sums over the current logging interval.
  double sum_loss = 0, sum_word = 0, sum_count = 0, sum_grad = 0;
  int64_t n_interval = 0, images_interval = 0;
  double interval_start = 0;
  double run_start = 0;  // now_secs() when run() began
  std::optional<nlohmann::ordered_json> last_eval;

  Impl(TrainConfig c, bool r, TrainerHooks h)
      : cfg(std::move(c)), resume(r), hooks(std::move(h)), run_dir(cfg.train.run_dir) {}

  void say(const std::string& line) { log->info(line); }

  void setup_all();
  void restore();
  void save_last(int64_t epoch);
  void log_interval(int64_t epoch, double lr, double update_norm, double update_ratio);
  nlohmann::ordered_json run_eval(int64_t epoch);
  TrainResult run();
};

void Trainer::Impl::setup_all() {
  const models::Config& mc = cfg.model;
  run_dir.create();
  if (!resume)
    HMER_CHECK(!run_dir.has_checkpoint(), "run folder ", run_dir.root(),
               " already holds a checkpoint: continue it with --resume ", run_dir.root(),
               ", or choose another train.run_dir");
  else
    HMER_CHECK(run_dir.has_checkpoint(), "--resume ", run_dir.root(), ": no checkpoint there (no latest.json)");
  log = std::make_unique<TextLog>(run_dir.log_path(), !hooks.quiet);

  vocab = mc.vocabulary();
  train_ds = load_encoded_dataset(cfg.data.train, vocab, mc.vocab);
  HMER_CHECK(train_ds->size() > 0, "data.train ", train_ds->source(), ": no samples");
  if (cfg.data.valid) valid_ds = load_encoded_dataset(*cfg.data.valid, vocab, mc.vocab);

  model = models::make_model(mc.model, mc.run.seed);
  if (hooks.initial_weights && !resume) model->load_state_dict(*hooks.initial_weights, true);
  model->train();
  named_params = model->named_parameters();
  params.clear();
  std::vector<std::string> names;
  for (const auto& [n, p] : named_params) {
    params.push_back(p);
    names.push_back(n);
  }
  optim::ParamGroup group;
  group.params = params;
  group.names = names;
  const YAML::Node optim_node = hooks.optim_override ? *hooks.optim_override : mc.optim;
  setup = optim::build_optim(optim_node, {group}, mc.run.epochs);

  loader = std::make_unique<data::DataLoader>(train_ds, vocab, cfg.data.loader, mc.preprocess);
  HealthOptions ho;
  ho.stall_ratio = cfg.train.stall_ratio;
  ho.stall_window = cfg.train.stall_window;
  health = std::make_unique<HealthMonitor>(ho);

  // Dropout draws from the default generator: seeded per run so two runs of a config match.
  manual_seed(mc.run.seed);

  if (resume) {
    restore();
  } else {
    run_dir.save_config(config_to_yaml(cfg.root));
  }
  csv = std::make_unique<CsvLogger>(run_dir.metrics_csv_path(), metric_columns());
  jsonl = std::make_unique<JsonlLogger>(run_dir.metrics_jsonl_path());
  if (resume) {
    // Rows a killed run logged after its last checkpoint would be logged again.
    csv->rewind("step", static_cast<double>(step));
    jsonl->rewind("step", static_cast<double>(step));
  }
  tb = std::make_unique<EventWriter>(run_dir.tensorboard_dir());
  if (resume) tb->add_session_start(step + 1);

  if (!hooks.quiet) std::printf("%s", format_config(cfg.root).c_str());
  say("run folder " + run_dir.root() + (resume ? " (resumed at step " + std::to_string(step) + ")" : ""));
  say(std::string("model ") + models::model_kind_name(mc.model.kind) + ", " +
      std::to_string(model->num_parameters()) + " parameters");
  std::istringstream d(setup.describe());
  for (std::string line; std::getline(d, line);) say(line);
  say("train " + train_ds->source() + ": " + std::to_string(train_ds->size()) + " samples, " +
      std::to_string(loader->batches_per_epoch()) + " batches of " + std::to_string(cfg.data.loader.batch_size) +
      " per epoch" + (loader->oversized() ? ", " + std::to_string(loader->oversized()) + " oversized left out" : ""));
  if (valid_ds)
    say("valid " + valid_ds->source() + ": " + std::to_string(valid_ds->size()) + " samples" +
        (cfg.data.valid_limit > 0 ? " (first " + std::to_string(cfg.data.valid_limit) + " evaluated)" : ""));
}

void Trainer::Impl::restore() {
  const Checkpoint ck = run_dir.load_last();
  model->load_state_dict(ck.weights, true);
  setup.optimizer->load_state_dict(ck.state.optimizer);
  step = ck.state.step;
  const auto& s = ck.state.scalars;
  auto num = [&](const std::string& k, double fallback) {
    auto it = s.find(k);
    return it == s.end() ? fallback : optim::parse_double(it->second, "training state scalar " + k);
  };
  loader->restore(data::LoaderCursor::from_json(optim::scalar_at(s, "loader_cursor")));
  auto rng = ck.state.rngs.find("dropout");
  HMER_CHECK(rng != ck.state.rngs.end(), "checkpoint of ", run_dir.root(), ": no dropout RNG state");
  default_generator().set_state(rng->second.seed, rng->second.offset);
  best_exprate = num("best_exprate", -1);
  skipped = static_cast<int64_t>(num("skipped", 0));
  elapsed_before = num("elapsed", 0);
  sum_loss = num("interval.loss", 0);
  sum_word = num("interval.word_loss", 0);
  sum_count = num("interval.counting_loss", 0);
  sum_grad = num("interval.grad_norm", 0);
  n_interval = static_cast<int64_t>(num("interval.n", 0));
  images_interval = 0;
}

void Trainer::Impl::save_last(int64_t epoch) {
  TrainingState st;
  st.step = step;
  st.epoch = epoch;
  st.optimizer = setup.optimizer->state_dict();
  st.rngs["dropout"] = RngState{default_generator().seed(), default_generator().offset()};
  st.scalars["loader_cursor"] = loader->cursor().to_json();
  st.scalars["best_exprate"] = optim::format_double(best_exprate);
  st.scalars["skipped"] = std::to_string(skipped);
  st.scalars["interval.loss"] = optim::format_double(sum_loss);
  st.scalars["interval.word_loss"] = optim::format_double(sum_word);
  st.scalars["interval.counting_loss"] = optim::format_double(sum_count);
  st.scalars["interval.grad_norm"] = optim::format_double(sum_grad);
  st.scalars["interval.n"] = std::to_string(n_interval);
  st.scalars["elapsed"] = optim::format_double(elapsed_before + (run_start > 0 ? now_secs() - run_start : 0.0));
  st.meta["experiment"] = cfg.model.run.experiment;
  st.meta["config"] = cfg.source;
  run_dir.save_last(model->state_dict(), st,
                    {{"model", models::model_kind_name(cfg.model.model.kind)}, {"step", std::to_string(step)}});
}

void Trainer::Impl::log_interval(int64_t epoch, double lr, double update_norm, double update_ratio) {
  if (n_interval == 0) return;
  const double t = now_secs();
  const double n = static_cast<double>(n_interval);
  LogRow row;
  row["kind"] = "train";
  row["step"] = step;
  row["epoch"] = epoch;
  row["loss"] = sum_loss / n;
  row["word_loss"] = sum_word / n;
  row["counting_loss"] = sum_count / n;
  row["lr"] = lr;
  row["grad_norm"] = sum_grad / n;
  row["update_norm"] = update_norm;
  row["update_ratio"] = update_ratio;
  row["images_per_sec"] = t > interval_start && images_interval > 0 ? images_interval / (t - interval_start) : 0.0;
  row["skipped"] = skipped;
  row["elapsed"] = elapsed_before + (t - run_start);
  csv->write(row);
  jsonl->write(row);
  tb->add_scalars({{"train/loss", sum_loss / n},
                   {"train/word_loss", sum_word / n},
                   {"train/counting_loss", sum_count / n},
                   {"train/lr", lr},
                   {"train/grad_norm", sum_grad / n},
                   {"train/update_norm", update_norm}},
                  step);
  const HealthReport rep = health->take_report();
  tb->add_scalars(rep.scalars(cfg.train.health_per_param), step);
  nlohmann::ordered_json hj = rep.to_json();
  hj["kind"] = "health";
  hj["step"] = step;
  jsonl->write(hj);
  sum_loss = sum_word = sum_count = sum_grad = 0;
  n_interval = 0;
  images_interval = 0;
  interval_start = t;
}

nlohmann::ordered_json Trainer::Impl::run_eval(int64_t epoch) {
  EvalOptions eo;
  eo.beam_width = cfg.train.eval_beam;
  eo.max_steps = cfg.model.model.decoding.max_steps;
  eo.length_normalization = cfg.model.model.decoding.length_normalization;
  eo.length_alpha = cfg.model.model.decoding.length_alpha;
  eo.limit = cfg.data.valid_limit;
  eo.counting = false;  // an extra encoder pass per image; `hmer eval` reports it
  eo.metric.worst_k = 5;
  const EvalOutput out = evaluate(*model, *valid_ds, vocab, cfg.model.preprocess, eo);
  nlohmann::ordered_json j = out.to_json();
  LogRow row;
  row["kind"] = "eval";
  row["step"] = step;
  row["epoch"] = epoch;
  row["elapsed"] = elapsed_before + (now_secs() - run_start);
  for (const char* k : {"exprate", "le1", "le2", "le3", "wer", "n"}) row[k] = j[k];
  csv->write(row);
  jsonl->write(row);
  tb->add_scalars({{"eval/exprate", j["exprate"].get<double>()},
                   {"eval/le1", j["le1"].get<double>()},
                   {"eval/le2", j["le2"].get<double>()},
                   {"eval/wer", j["wer"].get<double>()}},
                  step);
  tb->flush();
  char buf[160];
  std::snprintf(buf, sizeof buf, "eval epoch %lld step %lld (%.1f s): ", static_cast<long long>(epoch),
                static_cast<long long>(step), out.seconds);
  say(buf + out.metrics.summary_line());
  if (hooks.on_eval) hooks.on_eval(EvalSummary{epoch, step, j});
  return j;
}

TrainResult Trainer::Impl::run() {
  const models::Config& mc = cfg.model;
  const int64_t epochs = mc.run.epochs;
  const int64_t S = loader->batches_per_epoch();
  const double t_start = now_secs();
  interval_start = t_start;
  run_start = t_start;
  TrainResult res;
  res.run_dir = run_dir.root();
  std::unique_ptr<ProgressBar> bar;
  int64_t bar_epoch = -1;
  double last_lr = 0, last_update = 0, last_ratio = 0;
  const bool show_bar = !hooks.quiet && cfg.train.progress != "off";
  bool stop = false;

  auto elapsed = [&] { return elapsed_before + (now_secs() - t_start); };
  auto finish_bar = [&] {
    if (bar) bar->finish();
    log->attach(nullptr);
    bar.reset();
  };

  while (!stop) {
    const data::LoaderCursor cur = loader->cursor();
    const int64_t epoch = cur.epoch;
    if (epoch >= epochs) break;
    if (cfg.train.max_steps > 0 && step >= cfg.train.max_steps) {
      res.stopped_early = true;
      break;
    }
    if (show_bar && bar_epoch != epoch) {
      finish_bar();
      ProgressOptions po;
      po.label = "epoch " + std::to_string(epoch + 1) + "/" + std::to_string(epochs);
      po.total = S;
      po.initial = cur.position;
      po.tty = cfg.train.progress == "tty" ? 1 : cfg.train.progress == "plain" ? 0 : -1;
      bar = std::make_unique<ProgressBar>(po);
      log->attach(bar.get());
      bar_epoch = epoch;
    }
    data::Batch b;
    if (!loader->next(b)) {
      // ---- end of epoch ----
      log_interval(epoch, last_lr, last_update, last_ratio);
      finish_bar();
      bar_epoch = -1;
      res.epochs_done = epoch + 1;
      const bool last_epoch = epoch + 1 >= epochs;
      if (valid_ds && cfg.train.eval_every_epochs > 0 &&
          ((epoch + 1) % cfg.train.eval_every_epochs == 0 || last_epoch)) {
        nlohmann::ordered_json j = run_eval(epoch);
        const double er = j["exprate"].get<double>();
        last_eval = j;
        if (er > best_exprate) {
          best_exprate = er;
          run_dir.save_best(model->state_dict(),
                            {{"exprate", optim::format_double(er)}, {"step", std::to_string(step)},
                             {"epoch", std::to_string(epoch)}});
          say("new best ExpRate " + optim::format_double(er) + "%: " + run_dir.weights_best_path());
        }
      }
      save_last(epoch + 1);
      if (cfg.train.max_minutes > 0 && elapsed() >= cfg.train.max_minutes * 60 && !last_epoch) {
        say("train.max_minutes reached: stopping after epoch " + std::to_string(epoch + 1));
        res.stopped_early = true;
        break;
      }
      continue;
    }

    // ---- one step ----
    const optim::SchedulePoint at{b.epoch, b.position, S};
    optim::apply_schedule(*setup.optimizer, *setup.schedule, at);
    const auto& g0 = setup.optimizer->param_groups()[0];
    StepInfo info;
    info.epoch = b.epoch;
    info.batch = b.position;
    info.batch_size = b.size();
    info.lr = g0.lr;
    info.effective_lr = setup.optimizer->effective_lr(g0);
    setup.optimizer->zero_grad();
    const models::CanModel::Output out = model->forward(b.images, b.image_mask, b.labels, b.label_mask);
    info.loss = out.loss.item_double();
    info.word_loss = out.word_loss.item_double();
    info.counting_loss = out.counting_loss.defined() ? out.counting_loss.item_double() : 0.0;
    out.loss.backward();
    ++step;
    info.step = step;
    const FiniteCheck fc = check_finite(step, info.loss, named_params);
    if (!fc.ok) {
      if (!cfg.train.skip_nonfinite) {
        finish_bar();
        // No checkpoint here: the weights may already hold the bad values; the previous one stands.
        log->warn(fc.message);
        fail("training stopped at step ", step, " (epoch ", b.epoch, ", batch ", b.position, "): ", fc.message,
             "\n(train.nonfinite: skip skips such steps instead", run_dir.has_checkpoint() ?
             "; the last good checkpoint is in " + run_dir.root() : std::string(), ")");
      }
      ++skipped;
      info.skipped = true;
      setup.optimizer->zero_grad();
      log->warn("step " + std::to_string(step) + " skipped: " + fc.message);
    } else {
      info.grad_norm = optim::apply_clip(setup.clip, params);
      optim::WhatMoved probe(*setup.optimizer);
      setup.optimizer->step();
      const std::vector<optim::ParamMotion> rows = probe.finish();
      const optim::ParamMotion total = optim::total_motion(rows);
      info.update_norm = total.update_norm;
      info.update_ratio = total.ratio;
      for (const auto& w : health->record(step, rows, info.lr)) log->warn(w);
      sum_loss += info.loss;
      sum_word += info.word_loss;
      sum_count += info.counting_loss;
      sum_grad += info.grad_norm;
      ++n_interval;
    }
    images_interval += b.size();
    last_lr = info.lr;
    last_update = info.update_norm;
    last_ratio = info.update_ratio;
    if (bar) {
      char post[96];
      std::snprintf(post, sizeof post, "loss %.4f lr %.3g", info.loss, info.lr);
      bar->step(b.size(), post);
    }
    if (step % cfg.train.log_every_steps == 0) log_interval(b.epoch, info.lr, info.update_norm, info.update_ratio);
    if (hooks.on_step && !hooks.on_step(info)) {
      res.stopped_early = true;
      stop = true;
    }
    const bool at_max = cfg.train.max_steps > 0 && step >= cfg.train.max_steps;
    if (stop || at_max || (cfg.train.checkpoint_every_steps > 0 && step % cfg.train.checkpoint_every_steps == 0))
      save_last(b.epoch);
  }
  finish_bar();
  tb->flush();
  res.steps = step;
  res.skipped_steps = skipped;
  res.seconds = now_secs() - t_start;
  res.best_exprate = best_exprate;
  res.last_eval = last_eval;
  char buf[200];
  std::snprintf(buf, sizeof buf, "done: %lld steps in %s (this process)%s", static_cast<long long>(step),
                format_duration(res.seconds).c_str(),
                best_exprate >= 0 ? (", best ExpRate " + optim::format_double(best_exprate) + "%").c_str() : "");
  say(buf);
  return res;
}

Trainer::Trainer(TrainConfig cfg, bool resume, TrainerHooks hooks)
    : impl_(std::make_unique<Impl>(std::move(cfg), resume, std::move(hooks))) {
  impl_->setup_all();
}
Trainer::~Trainer() = default;
TrainResult Trainer::run() { return impl_->run(); }
models::CanModel& Trainer::model() { return *impl_->model; }
const TrainConfig& Trainer::config() const { return impl_->cfg; }

}  // namespace hmer::train
