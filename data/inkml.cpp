#include "data/inkml.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace fs = std::filesystem;

namespace hmer::data {

namespace {

// ---- a small XML reader ---------------------------------------------------------------------------
// Enough XML for InkML: elements, attributes, text, the five named entities and numeric character
// references, comments, CDATA, processing instructions and a DOCTYPE (skipped). No DTD entities and
// no namespaces beyond stripping a prefix; every error carries the line number.

struct XmlNode {
  std::string name;  // local name (prefix stripped)
  std::vector<std::pair<std::string, std::string>> attrs;
  std::string text;  // concatenated character data directly inside this element
  std::vector<int> children;
  int parent = -1;
  size_t line = 0;
  size_t outer_begin = 0, outer_end = 0;  // byte range of the whole element in the source

  const std::string* attr(const std::string& key) const {
    for (const auto& [k, v] : attrs)
      if (k == key) return &v;
    return nullptr;
  }
};

class XmlReader {
 public:
  XmlReader(const std::string& text, const std::string& source) : s_(text), source_(source) {
    for (size_t i = 0; i < s_.size(); ++i)
      if (s_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<XmlNode> parse() {
    size_t i = 0;
    if (s_.size() >= 3 && static_cast<unsigned char>(s_[0]) == 0xEF && static_cast<unsigned char>(s_[1]) == 0xBB &&
        static_cast<unsigned char>(s_[2]) == 0xBF)
      i = 3;
    std::vector<int> stack;
    int root = -1;
    while (i < s_.size()) {
      if (s_[i] != '<') {
        const size_t j = std::min(s_.find('<', i), s_.size());
        const std::string text = decode(i, j);
        if (stack.empty()) {
          if (text.find_first_not_of(" \t\r\n") != std::string::npos)
            error(i, root < 0 ? "text before the root element" : "text after the root element");
        } else {
          nodes_[stack.back()].text += text;
        }
        i = j;
        continue;
      }
      if (starts(i, "<?")) {
        i = skip_past(i, "?>", "unterminated processing instruction");
        continue;
      }
      if (starts(i, "<!--")) {
        i = skip_past(i, "-->", "unterminated comment");
        continue;
      }
      if (starts(i, "<![CDATA[")) {
        const size_t e = s_.find("]]>", i + 9);
        if (e == std::string::npos) error(i, "unterminated CDATA section");
        if (stack.empty()) error(i, "CDATA outside the root element");
        nodes_[stack.back()].text += s_.substr(i + 9, e - i - 9);
        i = e + 3;
        continue;
      }
      if (starts(i, "<!")) {
        i = skip_doctype(i);
        continue;
      }
      if (starts(i, "</")) {
        size_t j = i + 2;
        const std::string name = read_name(j);
        skip_ws(j);
        if (j >= s_.size() || s_[j] != '>') error(i, "malformed closing tag </" + name);
        if (stack.empty()) error(i, "closing tag </" + name + "> without an open element");
        XmlNode& open = nodes_[stack.back()];
        if (local(name) != open.name)
          error(i, "closing tag </" + name + "> does not match <" + open.name + "> opened on line " +
                       std::to_string(open.line));
        open.outer_end = j + 1;
        stack.pop_back();
        i = j + 1;
        continue;
      }
      // start tag
      XmlNode node;
      node.line = line_of(i);
      node.outer_begin = i;
      size_t j = i + 1;
      const std::string raw_name = read_name(j);
      if (raw_name.empty()) error(i, "'<' not followed by an element name");
      node.name = local(raw_name);
      bool self_close = false;
      while (true) {
        skip_ws(j);
        if (j >= s_.size()) error(i, "unterminated tag <" + raw_name);
        if (s_[j] == '>') { ++j; break; }
        if (s_[j] == '/') {
          if (j + 1 >= s_.size() || s_[j + 1] != '>') error(j, "expected '/>' in <" + raw_name);
          self_close = true;
          j += 2;
          break;
        }
        const size_t apos = j;
        const std::string key = read_name(j);
        if (key.empty()) error(apos, "malformed attribute in <" + raw_name);
        skip_ws(j);
        if (j >= s_.size() || s_[j] != '=') error(apos, "attribute '" + key + "' has no value");
        ++j;
        skip_ws(j);
        if (j >= s_.size() || (s_[j] != '"' && s_[j] != '\'')) error(apos, "attribute '" + key + "' is not quoted");
        const char q = s_[j];
        const size_t e = s_.find(q, j + 1);
        if (e == std::string::npos) error(apos, "unterminated value of attribute '" + key + "'");
        node.attrs.emplace_back(key, decode(j + 1, e));
        j = e + 1;
      }
      const int id = static_cast<int>(nodes_.size());
      if (stack.empty()) {
        if (root >= 0) error(i, "a second root element <" + raw_name + ">");
        root = id;
      } else {
        node.parent = stack.back();
        nodes_[stack.back()].children.push_back(id);
      }
      if (self_close) node.outer_end = j;
      nodes_.push_back(std::move(node));
      if (!self_close) stack.push_back(id);
      i = j;
    }
    if (!stack.empty()) {
      const XmlNode& open = nodes_[stack.back()];
      fail(source_, ":", line_of(s_.size()), ": unexpected end of file: <", open.name, "> opened on line ",
           open.line, " is not closed");
    }
    if (root < 0) fail(source_, ":1: no XML element found");
    return std::move(nodes_);
  }

  size_t line_of(size_t offset) const {
    // line_starts_ begins with 0, so the count of starts <= offset is the 1-based line.
    return static_cast<size_t>(std::upper_bound(line_starts_.begin(), line_starts_.end(), offset) -
                               line_starts_.begin());
  }

 private:
  [[noreturn]] void error(size_t offset, const std::string& what) const {
    fail(source_, ":", line_of(offset), ": malformed XML: ", what);
  }
  bool starts(size_t i, const char* lit) const { return s_.compare(i, std::char_traits<char>::length(lit), lit) == 0; }
  size_t skip_past(size_t i, const char* end, const char* what) const {
    const size_t e = s_.find(end, i);
    if (e == std::string::npos) error(i, what);
    return e + std::char_traits<char>::length(end);
  }
  size_t skip_doctype(size_t i) const {
    int bracket = 0;
    for (size_t j = i + 2; j < s_.size(); ++j) {
      if (s_[j] == '[') ++bracket;
      else if (s_[j] == ']') --bracket;
      else if (s_[j] == '>' && bracket <= 0) return j + 1;
    }
    error(i, "unterminated <! declaration");
  }
  void skip_ws(size_t& j) const {
    while (j < s_.size() && (s_[j] == ' ' || s_[j] == '\t' || s_[j] == '\n' || s_[j] == '\r')) ++j;
  }
  std::string read_name(size_t& j) const {
    const size_t b = j;
    while (j < s_.size()) {
      const unsigned char c = static_cast<unsigned char>(s_[j]);
      if (std::isalnum(c) || c == '_' || c == ':' || c == '-' || c == '.' || c >= 0x80) ++j;
      else break;
    }
    return s_.substr(b, j - b);
  }
  static std::string local(const std::string& name) {
    const size_t c = name.rfind(':');
    return c == std::string::npos ? name : name.substr(c + 1);
  }
  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  // Character data in [b, e) with entities resolved.
  std::string decode(size_t b, size_t e) const {
    std::string out;
    out.reserve(e - b);
    for (size_t i = b; i < e; ++i) {
      if (s_[i] != '&') {
        out += s_[i];
        continue;
      }
      const size_t semi = s_.find(';', i);
      if (semi == std::string::npos || semi >= e || semi - i > 12) error(i, "a bare '&' (write &amp;)");
      const std::string ent = s_.substr(i + 1, semi - i - 1);
      if (ent == "lt") out += '<';
      else if (ent == "gt") out += '>';
      else if (ent == "amp") out += '&';
      else if (ent == "quot") out += '"';
      else if (ent == "apos") out += '\'';
      else if (ent.size() > 1 && ent[0] == '#') {
        const bool hex = ent[1] == 'x' || ent[1] == 'X';
        const std::string digits = ent.substr(hex ? 2 : 1);
        uint32_t cp = 0;
        const auto r = std::from_chars(digits.data(), digits.data() + digits.size(), cp, hex ? 16 : 10);
        if (digits.empty() || r.ec != std::errc() || r.ptr != digits.data() + digits.size() || cp == 0 ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
          error(i, "bad character reference &" + ent + ";");
        append_utf8(out, cp);
      } else {
        error(i, "unknown entity &" + ent + ";");
      }
      i = semi;
    }
    return out;
  }

  const std::string& s_;
  const std::string& source_;
  std::vector<size_t> line_starts_{0};
  std::vector<XmlNode> nodes_;
};

// ---- InkML semantics -------------------------------------------------------------------------

std::string id_of(const XmlNode& n) {
  if (const auto* v = n.attr("xml:id")) return *v;
  if (const auto* v = n.attr("id")) return *v;
  return "";
}

struct Ctx {
  const std::vector<XmlNode>& nodes;
  const XmlReader& reader;
  const std::string& source;
  const std::string& text;
};

// Parses the point list of a trace. InkML allows value qualifiers: '!' explicit, '\'' first
// difference, '"' second difference; a qualifier stays in force for that channel until changed.
Stroke parse_trace(const XmlNode& n, size_t nchan_declared, bool declared, std::vector<std::string>& channels,
                   const Ctx& ctx, size_t* used_channels) {
  Stroke st;
  st.id = id_of(n);
  const std::string& t = n.text;
  size_t nchan = nchan_declared;
  enum Mode { Explicit, Diff1, Diff2 };
  std::vector<Mode> mode;
  std::vector<double> last, vel;
  std::vector<double> vals;
  size_t i = 0, point = 0;
  auto err = [&](const std::string& what) {
    // Line of the trace start plus the newlines before the failing character.
    const size_t line = n.line + static_cast<size_t>(std::count(t.begin(), t.begin() + std::min(i, t.size()), '\n'));
    fail(ctx.source, ":", line, ": trace '", st.id, "' point ", point + 1, ": ", what);
  };
  while (i <= t.size()) {
    vals.clear();
    std::vector<Mode> pmode;
    // one point: values up to ',' or end
    while (i < t.size() && t[i] != ',') {
      const char c = t[i];
      if (std::isspace(static_cast<unsigned char>(c))) { ++i; continue; }
      Mode m = vals.size() < mode.size() ? mode[vals.size()] : Explicit;
      if (c == '!') { m = Explicit; ++i; }
      else if (c == '\'') { m = Diff1; ++i; }
      else if (c == '"') { m = Diff2; ++i; }
      while (i < t.size() && std::isspace(static_cast<unsigned char>(t[i]))) ++i;
      if (i < t.size() && (t[i] == '?' || t[i] == '*')) err(std::string("the '") + t[i] + "' value is not supported");
      size_t b = i;
      if (b < t.size() && t[b] == '+') ++b;
      double v = 0;
      const auto r = std::from_chars(t.data() + b, t.data() + t.size(), v);
      if (r.ec != std::errc() || r.ptr == t.data() + b) {
        size_t e = i;
        while (e < t.size() && t[e] != ',' && !std::isspace(static_cast<unsigned char>(t[e]))) ++e;
        std::string msg(1, '\'');
        msg.append(t, i, std::min<size_t>(e - i, 40));
        msg += "' is not a number";
        err(msg);
      }
      if (!std::isfinite(v)) err("non-finite value");
      i = static_cast<size_t>(r.ptr - t.data());
      vals.push_back(v);
      pmode.push_back(m);
    }
    const bool at_end = i >= t.size();
    if (vals.empty()) {
      // A trailing comma (or an empty trace) is tolerated; an empty point in the middle is not.
      if (!at_end) err("empty point");
      break;
    }
    if (nchan == 0) {
      // No <traceFormat>: InkML's default is X Y; a third value is taken as T.
      if (vals.size() < 2 || vals.size() > 3) err("expected 2 or 3 values per point without a <traceFormat>, found " +
                                                  std::to_string(vals.size()));
      nchan = vals.size();
      channels = nchan == 2 ? std::vector<std::string>{"X", "Y"} : std::vector<std::string>{"X", "Y", "T"};
    }
    if (declared && point == 0 && vals.size() >= 2 && vals.size() < nchan) {
      // Some files declare more channels than they write (MfrDB: X Y F over X Y points). Accept the
      // shorter points when X and Y are among the channels present; the document keeps the common ones.
      bool xy = false, yy = false;
      for (size_t c = 0; c < vals.size(); ++c) {
        xy = xy || channels[c] == "X";
        yy = yy || channels[c] == "Y";
      }
      if (xy && yy) nchan = vals.size();
    }
    if (vals.size() != nchan)
      err("expected " + std::to_string(nchan) + " values (" + (declared ? "per <traceFormat>" : "as in the first point") +
          "), found " + std::to_string(vals.size()));
    if (mode.empty()) {
      mode.assign(nchan, Explicit);
      last.assign(nchan, 0.0);
      vel.assign(nchan, 0.0);
    }
    for (size_t c = 0; c < nchan; ++c) {
      mode[c] = pmode[c];
      double v = vals[c];
      if (mode[c] == Diff1) {
        if (point == 0) err("a difference value in the first point");
        vel[c] = v;
        v = last[c] + vel[c];
      } else if (mode[c] == Diff2) {
        if (point == 0) err("a second difference in the first point");
        vel[c] += v;
        v = last[c] + vel[c];
      } else {
        vel[c] = point == 0 ? 0.0 : v - last[c];
      }
      last[c] = v;
      vals[c] = v;
    }
    size_t xi = 0, yi = 1;
    for (size_t c = 0; c < nchan; ++c) {
      if (channels[c] == "X") xi = c;
      if (channels[c] == "Y") yi = c;
    }
    st.points.push_back({vals[xi], vals[yi]});
    for (size_t c = 0; c < nchan; ++c)
      if (c != xi && c != yi) st.extra.push_back(vals[c]);
    ++point;
    if (at_end) break;
    ++i;  // the ','
  }
  *used_channels = nchan;
  return st;
}

TraceGroup parse_group(int idx, const Ctx& ctx, int depth) {
  const XmlNode& n = ctx.nodes[idx];
  if (depth > 64) fail(ctx.source, ":", n.line, ": traceGroups nested deeper than 64 levels");
  TraceGroup g;
  g.id = id_of(n);
  for (int c : n.children) {
    const XmlNode& ch = ctx.nodes[c];
    if (ch.name == "annotation") {
      const auto* type = ch.attr("type");
      if (type && *type == "truth") g.truth = ch.text;
    } else if (ch.name == "traceView") {
      const auto* ref = ch.attr("traceDataRef");
      if (!ref) fail(ctx.source, ":", ch.line, ": <traceView> without traceDataRef");
      std::string r = *ref;
      if (!r.empty() && r[0] == '#') r.erase(0, 1);
      g.trace_refs.push_back(r);
    } else if (ch.name == "annotationXML") {
      if (const auto* h = ch.attr("href")) g.href = *h;
    } else if (ch.name == "traceGroup") {
      g.groups.push_back(parse_group(c, ctx, depth + 1));
    }
  }
  return g;
}

void check_refs(const TraceGroup& g, const std::vector<std::string>& ids, const std::string& source) {
  for (const auto& r : g.trace_refs)
    if (std::find(ids.begin(), ids.end(), r) == ids.end())
      fail(source, ": traceGroup '", g.id, "' refers to trace '", r, "', which does not exist");
  for (const auto& c : g.groups) check_refs(c, ids, source);
}

const XmlNode* find_trace_format(const std::vector<XmlNode>& nodes, int root) {
  // Direct child first; otherwise inside <definitions>/<context>.
  std::vector<int> todo = {root};
  while (!todo.empty()) {
    const int k = todo.front();
    todo.erase(todo.begin());
    for (int c : nodes[k].children) {
      if (nodes[c].name == "traceFormat") return &nodes[c];
      if (nodes[c].name == "definitions" || nodes[c].name == "context") todo.push_back(c);
    }
  }
  return nullptr;
}

std::string fmt_num(double v, int precision) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::general, precision);
  return std::string(buf, r.ptr);
}

void write_group(std::ostringstream& os, const TraceGroup& g, int indent) {
  const std::string pad(static_cast<size_t>(indent), '\t');
  os << pad << "<traceGroup xml:id=\"" << xml_escape(g.id) << "\">\n";
  if (!g.truth.empty()) os << pad << "\t<annotation type=\"truth\">" << xml_escape(g.truth) << "</annotation>\n";
  for (const auto& r : g.trace_refs) os << pad << "\t<traceView traceDataRef=\"" << xml_escape(r) << "\"/>\n";
  if (!g.href.empty()) os << pad << "\t<annotationXML href=\"" << xml_escape(g.href) << "\"/>\n";
  for (const auto& c : g.groups) write_group(os, c, indent + 1);
  os << pad << "</traceGroup>\n";
}

}  // namespace

std::string InkDocument::annotation(const std::string& type) const {
  for (const auto& [k, v] : annotations)
    if (k == type) return v;
  return "";
}

void InkDocument::set_annotation(const std::string& type, const std::string& value) {
  for (auto& [k, v] : annotations)
    if (k == type) {
      v = value;
      return;
    }
  annotations.emplace_back(type, value);
}

InkDocument parse_inkml(const std::string& text, const std::string& source) {
  XmlReader reader(text, source);
  const std::vector<XmlNode> nodes = reader.parse();
  // The root is the first node without a parent.
  int root = 0;
  while (nodes[root].parent != -1) ++root;
  const XmlNode& r = nodes[root];
  if (r.name != "ink") fail(source, ":", r.line, ": the root element is <", r.name, ">, expected <ink>");
  const Ctx ctx{nodes, reader, source, text};

  InkDocument doc;
  size_t nchan = 0;
  bool declared = false;
  if (const XmlNode* tf = find_trace_format(nodes, root)) {
    doc.channels.clear();
    for (int c : tf->children) {
      const XmlNode& ch = nodes[c];
      if (ch.name != "channel") continue;
      const auto* name = ch.attr("name");
      if (!name || name->empty()) fail(source, ":", ch.line, ": <channel> without a name");
      doc.channels.push_back(*name);
    }
    const bool has_x = std::find(doc.channels.begin(), doc.channels.end(), "X") != doc.channels.end();
    const bool has_y = std::find(doc.channels.begin(), doc.channels.end(), "Y") != doc.channels.end();
    if (!has_x || !has_y) fail(source, ":", tf->line, ": <traceFormat> has no X and Y channels");
    nchan = doc.channels.size();
    declared = true;
  }
  std::vector<std::string> ids;
  std::vector<size_t> used;  // channels present in each stroke
  for (int c : r.children) {
    const XmlNode& n = nodes[c];
    if (n.name == "annotation") {
      const auto* type = n.attr("type");
      doc.annotations.emplace_back(type ? *type : "", n.text);
      if (type && *type == "truth" && doc.truth_line == 0) doc.truth_line = n.line;
    } else if (n.name == "annotationXML") {
      if (doc.annotation_xml.empty()) doc.annotation_xml = text.substr(n.outer_begin, n.outer_end - n.outer_begin);
    } else if (n.name == "trace") {
      std::vector<std::string> ch = doc.channels;
      size_t k = 0;
      Stroke s = parse_trace(n, nchan, declared, ch, ctx, &k);
      if (!declared && nchan == 0 && !s.points.empty()) {
        doc.channels = ch;
        nchan = ch.size();
      }
      used.push_back(s.points.empty() ? doc.channels.size() : k);
      if (s.id.empty()) s.id = std::to_string(doc.strokes.size());
      ids.push_back(s.id);
      doc.strokes.push_back(std::move(s));
    } else if (n.name == "traceGroup") {
      doc.groups.push_back(parse_group(c, ctx, 0));
    }
  }
  // Keep the channels every stroke has; drop the others' extra values.
  const size_t common = used.empty() ? doc.channels.size() : *std::min_element(used.begin(), used.end());
  if (common < doc.channels.size()) {
    for (size_t si = 0; si < doc.strokes.size(); ++si) {
      Stroke& s = doc.strokes[si];
      const size_t have = used[si] - 2, keep = common - 2;
      if (s.points.empty()) continue;
      std::vector<double> e;
      e.reserve(s.points.size() * keep);
      for (size_t p = 0; p < s.points.size(); ++p)
        for (size_t c = 0; c < keep; ++c) e.push_back(s.extra[p * have + c]);
      s.extra = std::move(e);
    }
    doc.channels.resize(common);
  }
  for (const auto& g : doc.groups) check_refs(g, ids, source);
  return doc;
}

InkDocument read_inkml(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  HMER_CHECK(f.good(), path, ": cannot open the InkML file");
  std::ostringstream ss;
  ss << f.rdbuf();
  HMER_CHECK(!f.bad(), path, ": read error");
  return parse_inkml(ss.str(), path);
}

std::string xml_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string write_inkml(const InkDocument& doc, int precision) {
  HMER_CHECK(precision >= 1 && precision <= 17, "write_inkml: precision ", precision, " is outside [1, 17]");
  std::ostringstream os;
  os << "<ink xmlns=\"http://www.w3.org/2003/InkML\">\n<traceFormat>\n";
  for (const auto& c : doc.channels) os << "<channel name=\"" << xml_escape(c) << "\" type=\"decimal\"/>\n";
  os << "</traceFormat>\n";
  for (const auto& [k, v] : doc.annotations)
    os << "<annotation type=\"" << xml_escape(k) << "\">" << xml_escape(v) << "</annotation>\n";
  if (!doc.annotation_xml.empty()) os << doc.annotation_xml << "\n";
  size_t xi = 0, yi = 1;
  for (size_t c = 0; c < doc.channels.size(); ++c) {
    if (doc.channels[c] == "X") xi = c;
    if (doc.channels[c] == "Y") yi = c;
  }
  const size_t nextra = doc.channels.size() >= 2 ? doc.channels.size() - 2 : 0;
  for (size_t si = 0; si < doc.strokes.size(); ++si) {
    const Stroke& s = doc.strokes[si];
    HMER_CHECK(s.extra.size() == s.points.size() * nextra, "write_inkml: stroke '", s.id, "' has ", s.extra.size(),
               " extra values for ", s.points.size(), " points and ", nextra, " extra channels");
    os << "<trace id=\"" << xml_escape(s.id.empty() ? std::to_string(si) : s.id) << "\">";
    for (size_t p = 0; p < s.points.size(); ++p) {
      if (p) os << ", ";
      size_t e = 0;
      for (size_t c = 0; c < doc.channels.size(); ++c) {
        if (c) os << ' ';
        if (c == xi) os << fmt_num(s.points[p].x, precision);
        else if (c == yi) os << fmt_num(s.points[p].y, precision);
        else os << fmt_num(s.extra[p * nextra + e++], precision);
      }
    }
    os << "</trace>\n";
  }
  for (const auto& g : doc.groups) write_group(os, g, 0);
  os << "</ink>\n";
  return os.str();
}

void save_inkml(const InkDocument& doc, const std::string& path, int precision) {
  const std::string text = write_inkml(doc, precision);
  const std::string tmp = path + ".tmp";
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    fs::create_directories(parent, ec);
    HMER_CHECK(!ec, "cannot create the directory ", parent.string(), ": ", ec.message());
  }
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    HMER_CHECK(f.good(), tmp, ": cannot open for writing");
    f << text;
    f.flush();
    HMER_CHECK(f.good(), tmp, ": write failed");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  HMER_CHECK(!ec, "cannot rename ", tmp, " to ", path, ": ", ec.message());
}

}  // namespace hmer::data
