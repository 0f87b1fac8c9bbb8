// Text placed in XML or HTML written by the tools (verify's JUnit report, espalier report's page).

public enum MarkupText {
  /// `text` for an element or a quoted attribute: the five markup characters escaped (the apostrophe as
  /// `apostrophe`), tab, newline and return kept, and every scalar `forbidden` says the format cannot
  /// hold replaced by U+FFFD.
  public static func escape(_ text: String, apostrophe: String, forbidden: (UInt32) -> Bool) -> String {
    var out = ""
    out.reserveCapacity(text.utf8.count)
    for scalar in text.unicodeScalars {
      switch scalar {
      case "&": out += "&amp;"
      case "<": out += "&lt;"
      case ">": out += "&gt;"
      case "\"": out += "&quot;"
      case "'": out += apostrophe
      case "\t", "\n", "\r": out.unicodeScalars.append(scalar)
      default:
        if forbidden(scalar.value) { out += "\u{FFFD}" } else { out.unicodeScalars.append(scalar) }
      }
    }
    return out
  }
}
