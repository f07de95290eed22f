#include "optim/factory.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "core/error.h"
#include "optim/adadelta.h"
#include "optim/adam.h"
#include "optim/sgd.h"

namespace hmer::optim {

namespace {

// Everything the optimizer keys describe, before any parameter exists.
struct OptimSpec {
  std::string name;  // adadelta | sgd | momentum | adam | adamw
  Variant variant = Variant::Torch;
  AdadeltaOptions adadelta;
  SGDOptions sgd{0.0};
  PaddleMomentumOptions momentum;
  AdamOptions adam;
  AdamWOptions adamw;
  double lr = 0;
};

const std::vector<std::string> kCommonKeys = {"optimizer", "variant", "lr", "weight_decay", "lr_schedule",
                                              "gradient_clip"};

void check_optim_keys(const YAML::Node& node, const std::string& path, const std::string& name,
                      const std::vector<std::string>& specific) {
  std::vector<std::string> allowed = kCommonKeys;
  allowed.insert(allowed.end(), specific.begin(), specific.end());
  HMER_CHECK(node.IsMap(), path, ": expected a map of optimizer keys");
  for (const auto& kv : node) {
    const std::string k = kv.first.as<std::string>();
    if (std::find(allowed.begin(), allowed.end(), k) != allowed.end()) continue;
    static const std::vector<std::string> kKnown = {"rho", "eps", "momentum", "dampening", "nesterov",
                                                    "betas", "amsgrad", "paddle_aliased_update"};
    if (std::find(kKnown.begin(), kKnown.end(), k) != kKnown.end())
      fail(path, ".", k, ": not a parameter of ", name, " (its keys: ", [&] {
        std::string s;
        for (size_t i = 0; i < allowed.size(); ++i) s += (i ? ", " : "") + allowed[i];
        return s;
      }(), ")");
    yaml::check_keys(node, path, allowed);  // reports the unknown key with the allowed list
  }
}

OptimSpec parse_spec(const YAML::Node& node, const std::string& path) {
  HMER_CHECK(node.IsDefined() && node.IsMap(), path, ": expected a map with at least 'optimizer'");
  OptimSpec s;
  s.name = yaml::lower(yaml::get_string(node, "optimizer", path));
  s.variant = parse_variant(yaml::lower(yaml::get_string(node, "variant", path, "torch")));
  const bool paddle = s.variant == Variant::Paddle;
  const auto get = [&](const char* key, double fallback) { return yaml::get_double(node, key, path, fallback); };

  if (s.name == "adadelta") {
    check_optim_keys(node, path, "adadelta",
                     paddle ? std::vector<std::string>{"rho", "eps", "paddle_aliased_update"}
                            : std::vector<std::string>{"rho", "eps"});
    AdadeltaOptions o = paddle ? AdadeltaOptions::paddle() : AdadeltaOptions::torch();
    o.lr(get("lr", o.lr())).rho(get("rho", o.rho())).eps(get("eps", o.eps()));
    o.weight_decay(get("weight_decay", o.weight_decay()));
    o.paddle_aliased_update(yaml::get_bool(node, "paddle_aliased_update", path, false));
    s.adadelta = o;
    s.lr = o.lr();
  } else if ((s.name == "sgd" || s.name == "momentum") && !paddle) {
    check_optim_keys(node, path, s.name + " (torch)", {"momentum", "dampening", "nesterov"});
    // torch.optim.SGD has no default learning rate.
    SGDOptions o(yaml::get_double(node, "lr", path));
    o.momentum(get("momentum", s.name == "momentum" ? 0.9 : 0.0)).dampening(get("dampening", 0.0));
    o.nesterov(yaml::get_bool(node, "nesterov", path, false)).weight_decay(get("weight_decay", 0.0));
    HMER_CHECK(s.name != "momentum" || o.momentum() > 0, path, ".momentum: must be positive for optimizer momentum");
    s.sgd = o;
    s.lr = o.lr();
  } else if (s.name == "sgd" || s.name == "momentum") {
    // Paddle's SGD is its Momentum kernel with μ = 0, rounding included.
    check_optim_keys(node, path, s.name + " (paddle)", {"momentum", "nesterov"});
    PaddleMomentumOptions o;
    o.lr(get("lr", 0.001)).momentum(get("momentum", s.name == "momentum" ? 0.9 : 0.0));
    o.nesterov(yaml::get_bool(node, "nesterov", path, false)).weight_decay(get("weight_decay", 0.0));
    s.momentum = o;
    s.lr = o.lr();
  } else if (s.name == "adam" || s.name == "adamw") {
    HMER_CHECK(!paddle, path, ".variant: ", s.name, " is implemented with torch semantics only (variant: torch)");
    check_optim_keys(node, path, s.name, {"betas", "eps", "amsgrad"});
    double b1 = 0.9, b2 = 0.999;
    if (yaml::has(node, "betas")) {
      const YAML::Node b = node["betas"];
      HMER_CHECK(b.IsSequence() && b.size() == 2, path, ".betas: expected a list of two numbers");
      try {
        b1 = b[0].as<double>();
        b2 = b[1].as<double>();
      } catch (const YAML::Exception&) {
        fail(path, ".betas: expected a list of two numbers");
      }
    }
    if (s.name == "adam") {
      AdamOptions o;
      o.lr(get("lr", o.lr())).beta1(b1).beta2(b2).eps(get("eps", o.eps()));
      o.weight_decay(get("weight_decay", o.weight_decay())).amsgrad(yaml::get_bool(node, "amsgrad", path, false));
      s.adam = o;
      s.lr = o.lr();
    } else {
      AdamWOptions o;
      o.lr(get("lr", o.lr())).beta1(b1).beta2(b2).eps(get("eps", o.eps()));
      o.weight_decay(get("weight_decay", o.weight_decay())).amsgrad(yaml::get_bool(node, "amsgrad", path, false));
      s.adamw = o;
      s.lr = o.lr();
    }
  } else {
    fail(path, ".optimizer: unknown optimizer '", s.name, "' (expected adadelta, sgd, momentum, adam or adamw)");
  }
  return s;
}

std::unique_ptr<Optimizer> make_optimizer(const OptimSpec& s, std::vector<ParamGroup> groups) {
  if (s.name == "adadelta") return std::make_unique<Adadelta>(std::move(groups), s.adadelta);
  if ((s.name == "sgd" || s.name == "momentum") && s.variant == Variant::Torch)
    return std::make_unique<SGD>(std::move(groups), s.sgd);
  if (s.name == "sgd" || s.name == "momentum") return std::make_unique<PaddleMomentum>(std::move(groups), s.momentum);
  if (s.name == "adam") return std::make_unique<Adam>(std::move(groups), s.adam);
  return std::make_unique<AdamW>(std::move(groups), s.adamw);
}

}  // namespace

ClipConfig clip_from_yaml(const YAML::Node& node, ClipForm default_form, const std::string& path) {
  ClipConfig c;
  c.form = default_form;
  if (!node.IsDefined() || node.IsNull()) return c;
  if (node.IsScalar()) {
    const std::string v = yaml::lower(node.Scalar());
    if (v == "false" || v == "none" || v == "off") return c;
    HMER_CHECK(v != "true", path, ": 'true' needs a threshold; write gradient_clip: 100 or {type: norm, max_norm: 100}");
    try {
      c.threshold = node.as<double>();
    } catch (const YAML::Exception&) {
      fail(path, ": expected a number, false, or a map, got '", node.Scalar(), "'");
    }
    c.kind = ClipConfig::Kind::Norm;
  } else {
    HMER_CHECK(node.IsMap(), path, ": expected a number, false, or a map");
    const std::string type = yaml::lower(yaml::get_string(node, "type", path, "norm"));
    if (type == "norm") {
      yaml::check_keys(node, path, {"type", "max_norm", "clip_norm", "form", "error_if_nonfinite", "norm_type"});
      HMER_CHECK(yaml::has(node, "max_norm") != yaml::has(node, "clip_norm"), path,
                 ": give exactly one of 'max_norm' (torch's name) and 'clip_norm' (paddle's name)");
      c.kind = ClipConfig::Kind::Norm;
      c.threshold = yaml::get_double(node, yaml::has(node, "max_norm") ? "max_norm" : "clip_norm", path);
      if (yaml::has(node, "form")) {
        const std::string f = yaml::lower(yaml::get_string(node, "form", path));
        HMER_CHECK(f == "torch" || f == "paddle", path, ".form: '", f, "' (expected torch or paddle)");
        c.form = f == "torch" ? ClipForm::Torch : ClipForm::Paddle;
      }
      c.error_if_nonfinite = yaml::get_bool(node, "error_if_nonfinite", path, false);
      if (yaml::has(node, "norm_type")) {
        const std::string nt = yaml::lower(node["norm_type"].Scalar());
        c.norm_type = (nt == "inf" || nt == ".inf") ? std::numeric_limits<double>::infinity()
                                                    : yaml::get_double(node, "norm_type", path);
        HMER_CHECK(c.norm_type == 2.0 || std::isinf(c.norm_type), path, ".norm_type: only 2 and inf are supported");
      }
      HMER_CHECK(c.form == ClipForm::Torch || (!c.error_if_nonfinite && c.norm_type == 2.0), path,
                 ": error_if_nonfinite and norm_type exist only in the torch form");
    } else if (type == "value") {
      yaml::check_keys(node, path, {"type", "clip_value"});
      c.kind = ClipConfig::Kind::Value;
      c.threshold = yaml::get_double(node, "clip_value", path);
    } else {
      fail(path, ".type: unknown clipping '", type, "' (expected norm or value)");
    }
  }
  HMER_CHECK(c.threshold > 0, path, ": the threshold must be positive, got ", c.threshold);
  return c;
}

OptimSetup build_optim(const YAML::Node& node, std::vector<ParamGroup> groups, int64_t epochs,
                       const std::string& path) {
  const OptimSpec spec = parse_spec(node, path);
  OptimSetup out;
  out.schedule = schedule_from_yaml(node["lr_schedule"], epochs, path + ".lr_schedule");
  out.clip = clip_from_yaml(node["gradient_clip"], spec.variant == Variant::Paddle ? ClipForm::Paddle : ClipForm::Torch,
                            path + ".gradient_clip");
  out.optimizer = make_optimizer(spec, std::move(groups));
  return out;
}

ScheduleSpec build_schedule_spec(const YAML::Node& node, int64_t epochs, const std::string& path) {
  const OptimSpec spec = parse_spec(node, path);
  // Validates the clip keys too, so `hmer schedule` reports a broken optimizer section.
  (void)clip_from_yaml(node["gradient_clip"], ClipForm::Torch, path + ".gradient_clip");
  ScheduleSpec out;
  out.schedule = schedule_from_yaml(node["lr_schedule"], epochs, path + ".lr_schedule");
  out.base_lr = spec.lr;
  out.lr_ignored = spec.name == "adadelta" && spec.variant == Variant::Paddle;
  out.optimizer = spec.name + " (" + variant_name(spec.variant) + ")";
  return out;
}

std::string OptimSetup::describe() const {
  std::ostringstream os;
  os << "optimizer: " << (optimizer ? optimizer->describe() : "none") << "\n"
     << "lr schedule: " << (schedule ? schedule->describe() : "constant") << "\n"
     << "gradient clip: " << clip.describe() << "\n";
  return os.str();
}

YAML::Node optim_section(const YAML::Node& root, const std::string& file) {
  HMER_CHECK(root.IsMap(), file, ": expected a YAML map at the top level");
  const YAML::Node n = root["optim"];
  HMER_CHECK(n.IsDefined() && !n.IsNull(), file, ": no 'optim' section (the optimizer, lr_schedule and "
             "gradient_clip keys live under optim:)");
  return n;
}

int64_t config_epochs(const YAML::Node& root, const std::string& file) {
  if (!root.IsMap() || !yaml::has(root, "epochs")) return -1;
  return yaml::get_int(root, "epochs", file);
}

}  // namespace hmer::optim
