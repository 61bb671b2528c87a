// A small Markdown renderer that builds DOM nodes and never parses HTML.
//
// Model text is untrusted: every piece of it ends up in a Text node (textContent), so a
// "<script>" or "<img onerror=...>" in an answer shows as those characters and nothing
// runs.  Links are kept only for http(s) and mailto addresses.  Supported: paragraphs,
// headings, fenced code, block quotes, lists, rules, and inline code, bold, italics,
// strike-through and links: what chat models write.  An unfinished construct (a code
// fence still open while the answer streams) renders as what it is so far.

const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+-]*)/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^\s{0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const SAFE_URL = /^(https?:\/\/|mailto:)/i;

const INLINE = new RegExp(
  [
    /\\([\\`*_{}[\]()#+\-.!~>|])/.source, // 1: escaped character
    /(`+)([^`]|[^`][\s\S]*?[^`])\2(?!`)/.source, // 2, 3: code span
    /\*\*(?=\S)([\s\S]*?\S)\*\*/.source, // 4: strong
    /__(?=\S)([\s\S]*?\S)__(?!\w)/.source, // 5: strong
    /\*(?=[^\s*])([\s\S]*?[^\s*])\*/.source, // 6: emphasis
    /(?<![\w\\])_(?=\S)([\s\S]*?\S)_(?!\w)/.source, // 7: emphasis
    /~~(?=\S)([\s\S]*?\S)~~/.source, // 8: strike-through
    /\[([^\]\n]+)\]\(\s*([^)\s]+)\s*\)/.source, // 9, 10: link
    /(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/.source, // 11: bare address
  ].join("|"),
  "g",
);

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

function link(label, href) {
  if (!SAFE_URL.test(href)) return null;
  const a = el("a");
  a.href = href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  a.append(...label);
  return a;
}

/** Inline Markdown of `text` as a list of nodes (Text nodes and a few safe elements). */
export function inline(text) {
  const out = [];
  const re = new RegExp(INLINE); // one per call: the calls nest
  let last = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    let node = null;
    if (m[1] !== undefined) node = document.createTextNode(m[1]);
    else if (m[3] !== undefined) {
      node = el("code");
      node.textContent = m[3].length > 2 && m[3].startsWith(" ") && m[3].endsWith(" ") ? m[3].slice(1, -1) : m[3];
    } else if (m[4] !== undefined || m[5] !== undefined) {
      node = el("strong");
      node.append(...inline(m[4] ?? m[5]));
    } else if (m[6] !== undefined || m[7] !== undefined) {
      node = el("em");
      node.append(...inline(m[6] ?? m[7]));
    } else if (m[8] !== undefined) {
      node = el("del");
      node.append(...inline(m[8]));
    } else if (m[9] !== undefined) {
      node = link(inline(m[9]), m[10]);
    } else if (m[11] !== undefined) {
      node = link([document.createTextNode(m[11])], m[11]);
    }
    if (node === null) continue; // not a construct we render (an unsafe link): left as text
    if (m.index > last) out.push(document.createTextNode(text.slice(last, m.index)));
    out.push(node);
    last = re.lastIndex;
  }
  if (last < text.length) out.push(document.createTextNode(text.slice(last)));
  return out;
}

function paragraph(lines) {
  const p = el("p");
  lines.forEach((line, i) => {
    if (i > 0) p.append(el("br"));
    p.append(...inline(line.trim()));
  });
  return p;
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

/** Block-level Markdown of `lines` appended to `parent`. */
function blocks(lines, parent, depth) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (!line.trim()) {
      i += 1;
    } else if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence)) body.push(lines[i++]);
      i += 1; // the closing fence (or the end of what has arrived so far)
      const pre = el("pre");
      const code = el("code");
      if (m[2]) code.dataset.lang = m[2];
      code.textContent = body.join("\n");
      pre.append(code);
      parent.append(pre);
    } else if ((m = HEADING.exec(line))) {
      const h = el(`h${Math.min(m[1].length + 2, 6)}`); // h3..h6: answers sit below the page's own headings
      h.append(...inline(m[2]));
      parent.append(h);
      i += 1;
    } else if (RULE.test(line)) {
      parent.append(el("hr"));
      i += 1;
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        inner.push(m[1]);
        i += 1;
      }
      const quote = el("blockquote");
      if (depth < 8) blocks(inner, quote, depth + 1);
      else quote.textContent = inner.join("\n");
      parent.append(quote);
    } else if ((m = ITEM.exec(line))) {
      const ordered = /\d/.test(m[2]);
      const list = el(ordered ? "ol" : "ul");
      if (ordered && parseInt(m[2], 10) !== 1) list.start = parseInt(m[2], 10);
      const indent = m[1].length;
      while (i < lines.length) {
        const item = ITEM.exec(lines[i]);
        if (!item || item[1].length < indent || /\d/.test(item[2]) !== ordered) break;
        const body = [item[1].length > indent ? `${item[2]} ${item[3]}` : item[3]];
        i += 1;
        // continuation lines: indented, not a new item of this list
        while (i < lines.length && /^\s+\S/.test(lines[i]) && !ITEM.test(lines[i])) body.push(lines[i++].trim());
        const li = el("li");
        li.append(...paragraph(body).childNodes);
        list.append(li);
      }
      parent.append(list);
    } else {
      const para = [line];
      i += 1;
      while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) para.push(lines[i++]);
      parent.append(paragraph(para));
    }
  }
}

/** The Markdown `text` as a DocumentFragment of safe nodes. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  blocks(text.replace(/\r\n?/g, "\n").split("\n"), fragment, 0);
  return fragment;
}
