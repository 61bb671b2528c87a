// A small Markdown renderer that builds DOM nodes and never parses HTML.
//
// Model text is untrusted: every piece of it ends up in a Text node (textContent), so a
// "<script>" or "<img onerror=...>" in an answer shows as those characters and nothing
// runs.  Links are kept only for http(s) and mailto addresses.  Supported: paragraphs,
// headings, fenced code, block quotes, lists, rules, and inline code, bold, italics,
// strike-through and links: what chat models write.  An unfinished construct (a code
// fence still open while the answer streams) renders as what it is so far.
//
// Linear time, whatever the text: the page re-renders an answer while it streams, and a
// model (or someone feeding it) can write anything.  So no regular expression here can
// backtrack: the block lines are read by the small scanners below (a heading of spaces
// took cubic time with the pattern it had), and inline Markdown is found in one pass over
// each piece of text, where looking for the closing marker of an opening one starts where
// the last look for that kind of marker stopped (the lazy patterns it had searched the
// rest of the text again from every opening marker that never closes: quadratic time).
// Nesting is cut off at a fixed depth, so reading the inner texts again, one level down,
// costs a bounded number of passes in all (and cannot overflow the stack).
// `markdownWork()` counts the steps taken, for the tests.

const SAFE_URL = /^(https?:\/\/|mailto:)/i;
const SPECIAL = /[\\`*_~[h]/g; // what can start an inline construct (a character class: no backtracking)
const ESCAPABLE = new Set("\\`*_{}[]()#+-.!~>|");
const URL_TRAILING = new Set(".,;:!?'\""); // what a bare address does not end with
const MAX_QUOTE_DEPTH = 8; // block quotes nested deeper show as text
const MAX_INLINE_DEPTH = 8; // emphasis, links... nested deeper show as text

let work = 0;

/** The steps the renderer has taken so far (a count that only grows): for the tests. */
export function markdownWork() {
  return work;
}

// ---------------------------------------------------------------- characters
// What JavaScript's \s, \w and "." mean, without the regular expressions.

const SPACE = /\s/;

function isSpace(code) {
  if (code < 128) return code === 32 || (code >= 9 && code <= 13);
  return SPACE.test(String.fromCharCode(code));
}

function isWord(code) {
  return (
    (code >= 48 && code <= 57) || (code >= 65 && code <= 90) || (code >= 97 && code <= 122) || code === 95
  );
}

function isDigit(code) {
  return code >= 48 && code <= 57;
}

function isLineEnd(code) {
  return code === 10 || code === 13 || code === 0x2028 || code === 0x2029; // what "." does not match
}

/** The index of the first character at or after `from` that is not white space. */
function skipSpace(text, from) {
  let i = from;
  while (i < text.length && isSpace(text.charCodeAt(i))) i += 1;
  work += i - from + 1;
  return i;
}

/** Whether `text` from `from` on holds no line end. */
function noLineEnd(text, from) {
  work += text.length - from + 1;
  for (let i = from; i < text.length; i += 1) if (isLineEnd(text.charCodeAt(i))) return false;
  return true;
}

function isBlank(line) {
  return skipSpace(line, 0) === line.length;
}

// ---------------------------------------------------------------- block lines

/** A fence opening ("```lang" or "~~~"): {fence, lang}, or null. */
function fenceOf(line) {
  const start = skipSpace(line, 0);
  if (start > 3) return null;
  const mark = line[start];
  if (mark !== "`" && mark !== "~") return null;
  let end = start;
  while (end < line.length && line[end] === mark) end += 1;
  if (end - start < 3) return null;
  const from = skipSpace(line, end);
  let to = from;
  while (to < line.length) {
    const code = line.charCodeAt(to);
    if (!(isWord(code) || code === 43 || code === 45)) break; // [\w+-]
    to += 1;
  }
  work += to - start;
  return { fence: line.slice(start, end), lang: line.slice(from, to) };
}

/** A heading ("## Title ##"): {level, text}, or null. */
function headingOf(line) {
  const start = skipSpace(line, 0);
  if (start > 3) return null;
  let end = start;
  while (end < line.length && line[end] === "#") end += 1;
  const level = end - start;
  work += level;
  if (level < 1 || level > 6 || end >= line.length || !isSpace(line.charCodeAt(end))) return null;
  const from = skipSpace(line, end);
  // the text ends before the closing "#"s and white space (all of them)
  let to = line.length;
  while (to > from && isSpace(line.charCodeAt(to - 1))) to -= 1;
  while (to > from && line[to - 1] === "#") to -= 1;
  while (to > from && isSpace(line.charCodeAt(to - 1))) to -= 1;
  work += line.length - to;
  const text = line.slice(from, to);
  return noLineEnd(text, 0) ? { level, text } : null;
}

/** Whether the line is a rule ("---", "* * *", "___"). */
function isRule(line) {
  const start = skipSpace(line, 0);
  if (start > 3) return false;
  const mark = line[start];
  if (mark !== "-" && mark !== "*" && mark !== "_") return false;
  let marks = 0;
  let i = start + 1;
  for (; i < line.length; i += 1) {
    if (line[i] === mark) marks += 1;
    else if (!isSpace(line.charCodeAt(i))) break;
  }
  work += i - start;
  return i === line.length && marks >= 2;
}

/** A block quote line ("> text"): the text, or null. */
function quoteOf(line) {
  const start = skipSpace(line, 0);
  if (start > 3 || line[start] !== ">") return null;
  let from = start + 1;
  if (from < line.length && isSpace(line.charCodeAt(from))) from += 1;
  return noLineEnd(line, from) ? line.slice(from) : null;
}

/** A list item ("- text", "2. text"): {indent, marker, text}, or null. */
function itemOf(line) {
  const start = skipSpace(line, 0);
  let end = start;
  const code = line.charCodeAt(start);
  if (code === 45 || code === 42 || code === 43) {
    end += 1; // - * +
  } else {
    while (end < line.length && isDigit(line.charCodeAt(end))) end += 1;
    work += end - start;
    if (end === start || end - start > 9 || (line[end] !== "." && line[end] !== ")")) return null;
    end += 1;
  }
  if (end >= line.length || !isSpace(line.charCodeAt(end))) return null;
  const from = skipSpace(line, end);
  if (!noLineEnd(line, from)) return null;
  return { indent: start, marker: line.slice(start, end), text: line.slice(from) };
}

function startsBlock(line) {
  return (
    fenceOf(line) !== null ||
    headingOf(line) !== null ||
    isRule(line) ||
    quoteOf(line) !== null ||
    itemOf(line) !== null
  );
}

// ---------------------------------------------------------------- inline

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

function text(value) {
  return document.createTextNode(value);
}

// What the scans look for (see Scan.holds).
const STRONG_STAR = 0; // a "**" that closes: after a character that is not white space
const STRONG_UNDER = 1; // a "__" that closes: the same, and not followed by a word character
const EM_STAR = 2; // a "*" that closes: after a character that is neither white space nor "*"
const EM_UNDER = 3; // a "_" that closes: after one that is not white space, not before a word character
const STRIKE = 4; // a "~~" that closes: after a character that is not white space
const LABEL_END = 5; // "]" or a line end: where a link's label stops
const ADDRESS = 6; // not white space: where a link's address starts
const ADDRESS_END = 7; // white space or ")": where it stops
const PAREN = 8; // not white space: where the ")" after it should be
const BARE_END = 9; // white space, "<", ">", "(" or ")": where a bare address stops
const KINDS = 10;

/**
 * One piece of inline text being read from left to right.  `find(kind, from)` is the first
 * place at or after `from` where `kind` holds.  The places asked about for one kind only
 * move forward (each kind has one use), so each search starts where the last one ended or
 * further on: all the searches for a kind read the text at most once.
 */
class Scan {
  constructor(value) {
    this.text = value;
    this.n = value.length;
    this.from = null; // where the last search for each kind started (made when first needed)
    this.found = null; // and what it found
    this.ticks = null;
  }

  code(i) {
    return i >= 0 && i < this.n ? this.text.charCodeAt(i) : -1;
  }

  isSpaceAt(i) {
    return i >= 0 && i < this.n && isSpace(this.text.charCodeAt(i));
  }

  isWordAt(i) {
    return i >= 0 && i < this.n && isWord(this.text.charCodeAt(i));
  }

  holds(kind, q) {
    const c = this.text.charCodeAt(q);
    switch (kind) {
      case STRONG_STAR:
        return c === 42 && this.code(q + 1) === 42 && q > 0 && !this.isSpaceAt(q - 1);
      case STRONG_UNDER:
        return c === 95 && this.code(q + 1) === 95 && q > 0 && !this.isSpaceAt(q - 1) && !this.isWordAt(q + 2);
      case EM_STAR:
        return c === 42 && q > 0 && !this.isSpaceAt(q - 1) && this.code(q - 1) !== 42;
      case EM_UNDER:
        return c === 95 && q > 0 && !this.isSpaceAt(q - 1) && !this.isWordAt(q + 1);
      case STRIKE:
        return c === 126 && this.code(q + 1) === 126 && q > 0 && !this.isSpaceAt(q - 1);
      case LABEL_END:
        return c === 93 || c === 10;
      case ADDRESS:
      case PAREN:
        return !isSpace(c);
      case ADDRESS_END:
        return c === 41 || isSpace(c);
      case BARE_END:
        return c === 60 || c === 62 || c === 40 || c === 41 || isSpace(c);
      default:
        throw new Error(`no such kind: ${kind}`);
    }
  }

  /** The first index at or after `from` where `kind` holds (this.n if none). */
  find(kind, from) {
    if (this.from === null) {
      this.from = new Array(KINDS).fill(-1);
      this.found = new Array(KINDS).fill(0);
    }
    const last = this.from[kind];
    if (last >= 0 && last <= from && from <= this.found[kind]) return this.found[kind];
    let q = Math.min(from, this.n);
    while (q < this.n && !this.holds(kind, q)) q += 1;
    work += q - from + 1;
    this.from[kind] = from;
    this.found[kind] = q;
    return q;
  }

  /** For a "`" at `i`: [the end of its run, the start of the next run of that many "`"s or -1]. */
  tickCloser(i) {
    const value = this.text;
    if (this.ticks === null) {
      // the runs of "`" from here on, found once, the first time a "`" is met (nothing
      // before it is ever asked about: the text is read from left to right)
      const ends = []; // the end of each run, in order
      const byLength = new Map(); // run length -> {starts: of the runs that long, in order; next}
      let j = value.indexOf("`", i);
      while (j >= 0) {
        let end = j + 1;
        while (end < this.n && value.charCodeAt(end) === 96) end += 1;
        ends.push(end);
        let runs = byLength.get(end - j);
        if (runs === undefined) byLength.set(end - j, (runs = { starts: [], next: 0 }));
        runs.starts.push(j);
        j = value.indexOf("`", end);
      }
      work += this.n - i;
      this.ticks = { ends, byLength, run: 0 };
    }
    const ticks = this.ticks;
    while (ticks.ends[ticks.run] <= i) ticks.run += 1; // the run that `i` is in
    const end = ticks.ends[ticks.run];
    const runs = ticks.byLength.get(end - i);
    if (runs === undefined) return [end, -1];
    // the first run that long after this one (those before are never wanted again)
    while (runs.next < runs.starts.length && runs.starts[runs.next] <= end) runs.next += 1;
    work += 1;
    return [end, runs.next < runs.starts.length ? runs.starts[runs.next] : -1];
  }
}

/** A span that `inner` is parsed into, one level down. */
function span(tag, inner, depth) {
  const node = el(tag);
  inlineInto(node, inner, depth + 1);
  return node;
}

/**
 * The construct that starts at `i`: [node, end], or [null, end] for one that stays text (an
 * unsafe link), or null for none.  The rules are the ones that these patterns had, tried in
 * this order at each place:
 *   \\([\\`*_{}[\]()#+\-.!~>|])                       escaped character
 *   (`+)([^`]|[^`][\s\S]*?[^`])\2(?!`)                 code span
 *   \*\*(?=\S)([\s\S]*?\S)\*\*                         strong
 *   __(?=\S)([\s\S]*?\S)__(?!\w)                       strong
 *   \*(?=[^\s*])([\s\S]*?[^\s*])\*                     emphasis
 *   (?<![\w\\])_(?=\S)([\s\S]*?\S)_(?!\w)              emphasis
 *   ~~(?=\S)([\s\S]*?\S)~~                             strike-through
 *   \[([^\]\n]+)\]\(\s*([^)\s]+)\s*\)                  link
 *   (https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])           bare address
 */
function construct(s, i, depth) {
  const value = s.text;
  const n = s.n;
  switch (value.charCodeAt(i)) {
    case 92: // \
      if (i + 1 < n && ESCAPABLE.has(value[i + 1])) return [text(value[i + 1]), i + 2];
      return null;
    case 96: {
      // `: closed by the next run of exactly as many
      const [end, close] = s.tickCloser(i);
      if (close < 0) return null;
      const node = el("code");
      const code = value.slice(end, close);
      node.textContent = code.length > 2 && code.startsWith(" ") && code.endsWith(" ") ? code.slice(1, -1) : code;
      return [node, close + (end - i)];
    }
    case 42: {
      // *
      if (s.code(i + 1) === 42 && i + 2 < n && !s.isSpaceAt(i + 2)) {
        const q = s.find(STRONG_STAR, i + 3);
        if (q < n) return [span("strong", value.slice(i + 2, q), depth), q + 2];
      }
      if (i + 1 < n && !s.isSpaceAt(i + 1) && s.code(i + 1) !== 42) {
        const q = s.find(EM_STAR, i + 2);
        if (q < n) return [span("em", value.slice(i + 1, q), depth), q + 1];
      }
      return null;
    }
    case 95: {
      // _
      if (s.code(i + 1) === 95 && i + 2 < n && !s.isSpaceAt(i + 2)) {
        const q = s.find(STRONG_UNDER, i + 3);
        if (q < n) return [span("strong", value.slice(i + 2, q), depth), q + 2];
      }
      if ((i === 0 || (!s.isWordAt(i - 1) && s.code(i - 1) !== 92)) && i + 1 < n && !s.isSpaceAt(i + 1)) {
        const q = s.find(EM_UNDER, i + 2);
        if (q < n) return [span("em", value.slice(i + 1, q), depth), q + 1];
      }
      return null;
    }
    case 126: {
      // ~
      if (s.code(i + 1) === 126 && i + 2 < n && !s.isSpaceAt(i + 2)) {
        const q = s.find(STRIKE, i + 3);
        if (q < n) return [span("del", value.slice(i + 2, q), depth), q + 2];
      }
      return null;
    }
    case 91: {
      // [label](address)
      const close = s.find(LABEL_END, i + 1);
      if (close >= n || close === i + 1 || value[close] !== "]" || value[close + 1] !== "(") return null;
      const from = s.find(ADDRESS, close + 2);
      const to = s.find(ADDRESS_END, from);
      if (to === from) return null;
      const end = s.find(PAREN, to);
      if (value[end] !== ")") return null;
      const href = value.slice(from, to);
      if (!SAFE_URL.test(href)) return [null, end + 1]; // not a link we make: left as text
      const a = span("a", value.slice(i + 1, close), depth);
      a.href = href;
      a.rel = "noopener noreferrer nofollow";
      a.target = "_blank";
      return [a, end + 1];
    }
    case 104: {
      // h: a bare http(s) address
      let from;
      if (value.startsWith("http://", i)) from = i + 7;
      else if (value.startsWith("https://", i)) from = i + 8;
      else return null;
      if (from >= n) return null;
      // the address runs to white space or <>(), less what it may not end with
      let end = s.find(BARE_END, from);
      const stop = end;
      while (end >= from + 2 && URL_TRAILING.has(value[end - 1])) end -= 1;
      work += stop - end;
      if (end < from + 2) return null;
      const href = value.slice(i, end);
      const a = el("a");
      a.href = href;
      a.rel = "noopener noreferrer nofollow";
      a.target = "_blank";
      a.append(text(href));
      return [a, end];
    }
    default:
      return null;
  }
}

/** Append the inline Markdown of `value` to `parent`, `depth` levels down. */
function inlineInto(parent, value, depth) {
  if (depth > MAX_INLINE_DEPTH) {
    if (value) parent.append(text(value));
    return;
  }
  let s = null;
  let last = 0;
  let i = 0;
  while (i < value.length) {
    // on to the next character that can start a construct
    SPECIAL.lastIndex = i;
    const next = SPECIAL.exec(value);
    work += (next === null ? value.length : next.index) - i + 1;
    if (next === null) break;
    i = next.index;
    if (s === null) s = new Scan(value);
    const found = construct(s, i, depth);
    if (found === null) {
      i += 1;
      continue;
    }
    const [node, end] = found;
    if (node !== null) {
      if (i > last) parent.append(text(value.slice(last, i)));
      parent.append(node);
      last = end;
    }
    i = end;
  }
  if (last < value.length) parent.append(text(last === 0 ? value : value.slice(last)));
}

/** Inline Markdown of `value` as a list of nodes (Text nodes and a few safe elements). */
export function inline(value) {
  const box = document.createDocumentFragment();
  inlineInto(box, value, 0);
  return [...box.childNodes];
}

// ---------------------------------------------------------------- blocks

/** The lines of a paragraph (or a list item) appended to `parent`, with <br>s between. */
function paragraphInto(parent, lines) {
  lines.forEach((line, i) => {
    if (i > 0) parent.append(el("br"));
    work += line.length;
    inlineInto(parent, line.trim(), 0);
  });
  return parent;
}

/** Whether the line is indented text (a list item's continuation). */
function isIndented(line) {
  return line.length > 0 && isSpace(line.charCodeAt(0)) && !isBlank(line);
}

/** Block-level Markdown of `lines` appended to `parent`. */
function blocks(lines, parent, depth) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    work += 1;
    let m;
    if (isBlank(line)) {
      i += 1;
    } else if ((m = fenceOf(line))) {
      const { fence } = m;
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence)) {
        work += lines[i].length + 1;
        body.push(lines[i++]);
      }
      i += 1; // the closing fence (or the end of what has arrived so far)
      const pre = el("pre");
      const code = el("code");
      if (m.lang) code.dataset.lang = m.lang;
      code.textContent = body.join("\n");
      pre.append(code);
      parent.append(pre);
    } else if ((m = headingOf(line))) {
      const h = el(`h${Math.min(m.level + 2, 6)}`); // h3..h6: answers sit below the page's own headings
      inlineInto(h, m.text, 0);
      parent.append(h);
      i += 1;
    } else if (isRule(line)) {
      parent.append(el("hr"));
      i += 1;
    } else if (quoteOf(line) !== null) {
      const inner = [];
      while (i < lines.length && (m = quoteOf(lines[i])) !== null) {
        inner.push(m);
        i += 1;
      }
      const quote = el("blockquote");
      if (depth < MAX_QUOTE_DEPTH) blocks(inner, quote, depth + 1);
      else quote.textContent = inner.join("\n");
      parent.append(quote);
    } else if ((m = itemOf(line))) {
      const ordered = isDigit(m.marker.charCodeAt(0));
      const list = el(ordered ? "ol" : "ul");
      if (ordered && parseInt(m.marker, 10) !== 1) list.start = parseInt(m.marker, 10);
      const { indent } = m;
      while (i < lines.length) {
        const item = itemOf(lines[i]);
        if (!item || item.indent < indent || isDigit(item.marker.charCodeAt(0)) !== ordered) break;
        const body = [item.indent > indent ? `${item.marker} ${item.text}` : item.text];
        i += 1;
        // continuation lines: indented, not a new item of this list
        while (i < lines.length && isIndented(lines[i]) && itemOf(lines[i]) === null) {
          work += lines[i].length;
          body.push(lines[i++].trim());
        }
        list.append(paragraphInto(el("li"), body));
      }
      parent.append(list);
    } else {
      const para = [line];
      i += 1;
      while (i < lines.length && !isBlank(lines[i]) && !startsBlock(lines[i])) para.push(lines[i++]);
      parent.append(paragraphInto(el("p"), para));
    }
  }
}

/** The Markdown `text` as a DocumentFragment of safe nodes. */
export function renderMarkdown(value) {
  const fragment = document.createDocumentFragment();
  work += value.length;
  blocks(value.replace(/\r\n?/g, "\n").split("\n"), fragment, 0);
  return fragment;
}
