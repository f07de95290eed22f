#pragma once
// InkML (W3C) as used by CROHME: <traceFormat> (optional; X Y by default, often T, sometimes F),
// <trace id> point lists, <annotation type="truth"> (the LaTeX), nested <traceGroup>s for the symbol
// segmentation. A small XML reader of our own keeps line numbers so every error names file:line.
#include <map>
#include <string>
#include <vector>

namespace hmer::data {

struct Point {
  double x = 0, y = 0;
};

// One pen-down..pen-up trace. `extra` holds the other channels (T, F, ...) point by point,
// `extra.size() == points.size() * channels.size() - 2 per point`, in the document's channel order.
struct Stroke {
  std::string id;
  std::vector<Point> points;
  std::vector<double> extra;
};

struct TraceGroup {
  std::string id;
  std::string truth;                    // <annotation type="truth"> of the group (the symbol label)
  std::vector<std::string> trace_refs;  // <traceView traceDataRef="..."/>
  std::string href;                     // <annotationXML href="..."/>
  std::vector<TraceGroup> groups;       // nested groups (the outer "Segmentation" group holds symbols)
};

struct InkDocument {
  std::vector<std::string> channels = {"X", "Y"};  // from <traceFormat>; X and Y are required
  std::vector<Stroke> strokes;
  // Top-level <annotation type="..."> elements in document order (truth, writer, UI, ...).
  std::vector<std::pair<std::string, std::string>> annotations;
  std::vector<TraceGroup> groups;
  std::string annotation_xml;  // the top-level <annotationXML> element verbatim (MathML), if any
  size_t truth_line = 0;       // source line of the top-level truth annotation (0 = none), for messages

  std::string annotation(const std::string& type) const;  // "" when absent
  std::string truth() const { return annotation("truth"); }
  void set_annotation(const std::string& type, const std::string& value);
};

// Parses InkML text. `source` names it in errors ("<source>:<line>: ..."). Malformed XML (unclosed
// or mismatched tags, bad entities, garbage after the root), a root other than <ink>, traces with the
// wrong number of values per point or non-numeric values, or no X/Y channel all throw hmer::Error.
InkDocument parse_inkml(const std::string& text, const std::string& source = "inkml");
InkDocument read_inkml(const std::string& path);

// Serialises a document (traceFormat, annotations, traces, trace groups; the MathML is kept verbatim).
// Coordinates are written with up to `precision` significant digits, so integer data stays integer.
std::string write_inkml(const InkDocument& doc, int precision = 10);
// Writes atomically (path + ".tmp", then rename), creating missing parent directories.
void save_inkml(const InkDocument& doc, const std::string& path, int precision = 10);

// XML text escaping (&, <, >, ", ') for writers.
std::string xml_escape(const std::string& s);

}  // namespace hmer::data
