// The one way the console builds DOM: elements with attributes and children, where a string child
// becomes a Text node. Server data therefore never goes through an HTML parser (no innerHTML).

type AttrValue = string | number | boolean | null | undefined;
export type Child = Node | string | null | undefined | false;

/** `testid` sets data-testid; `class` sets className; false/null/undefined attributes are left out. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, AttrValue> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === 'class') el.className = String(value);
    else if (key === 'testid') el.dataset.testid = String(value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) if (child != null && child !== false) el.append(child);
  return el;
}

/** A small pill with a label; `kind` picks its colours in console.css. */
export function badge(text: string, kind: string, testid?: string, title?: string): HTMLSpanElement {
  return h('span', { class: `badge badge-${kind}`, testid, title }, text);
}

/** Replaces the element's children, leaving out the absent ones (as h does). */
export function fill(el: Element, ...children: Child[]): void {
  el.replaceChildren(...children.filter((c): c is Node | string => c != null && c !== false));
}
