// Tests for javascript/segret.js, no npm packages: `node --test javascript/tests/*.test.js` (any node >= 18;
// node 20 also accepts the bare directory `node --test javascript/tests/`, node >= 21 does not).
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const vm = require("node:vm");

const SCRIPT = path.resolve(__dirname, "..", "segret.js");
const segret = require(SCRIPT);
const { promptWords, parseConcepts, toggleConcept, chipModel, cleanPrompt } = segret;

// ------------------------------------------------------------------------------------------- promptWords

test("promptWords: plain prompt, lowercase, order of first appearance", () => {
    assert.deepEqual(promptWords("Cat, Dog, red CAR"), ["cat", "dog", "red", "car"]);
});

test("promptWords: empty and non-string input", () => {
    assert.deepEqual(promptWords(""), []);
    assert.deepEqual(promptWords(null), []);
    assert.deepEqual(promptWords(undefined), []);
    assert.deepEqual(promptWords("  ,,, ;; "), []);
});

test("promptWords: emphasis syntax", () => {
    assert.deepEqual(promptWords("(cat:1.2), ((dog)), [bird], [[fish]], {sun}, (red car:0.8)"), [
        "cat",
        "dog",
        "bird",
        "fish",
        "sun",
        "red",
        "car",
    ]);
    assert.deepEqual(promptWords("(cat: 1.25) (dog:.5) (owl:-1)"), ["cat", "dog", "owl"]);
});

test("promptWords: escaped brackets are literal punctuation", () => {
    assert.deepEqual(promptWords("\\(artist\\) style"), ["artist", "style"]);
});

test("promptWords: extra-network tags are removed entirely", () => {
    assert.deepEqual(promptWords("<lora:detail_tweaker:0.8> cat <hypernet:anime_v2:1> <lyco:thing:1> dog"), [
        "cat",
        "dog",
    ]);
    assert.deepEqual(promptWords("<lora:my-lora:1.0>,<embedding>"), []);
});

test("promptWords: prompt editing gives both words, steps are dropped", () => {
    assert.deepEqual(promptWords("a [cat:dog:0.5] on grass"), ["cat", "dog", "grass"]);
    assert.deepEqual(promptWords("[forest:city:10]"), ["forest", "city"]);
    assert.deepEqual(promptWords("[tiger::0.3] [:lion:5]"), ["tiger", "lion"]);
    assert.deepEqual(promptWords("[red|blue] ball"), ["red", "blue", "ball"]);
});

test("promptWords: BREAK and AND keywords are dropped (uppercase keywords only)", () => {
    assert.deepEqual(promptWords("cat BREAK dog AND bird :1.2 AND fish"), ["cat", "dog", "bird", "fish"]);
    // lowercase "break" is an ordinary word, lowercase "and" is a stopword
    assert.deepEqual(promptWords("coffee break and cake"), ["coffee", "break", "cake"]);
});

test("promptWords: duplicates (any case) are dropped", () => {
    assert.deepEqual(promptWords("cat, CAT, (cat:1.3), Cat dog cat"), ["cat", "dog"]);
});

test("promptWords: stopwords, pure numbers and single ASCII letters are dropped", () => {
    assert.deepEqual(promptWords("a photo of the cat with an owl in a box at night, 2 3 4, 1024, x"), [
        "cat",
        "owl",
        "box",
        "night",
    ]);
    // words containing digits are kept
    assert.deepEqual(promptWords("8k, 1girl, 4k uhd"), ["8k", "1girl", "4k", "uhd"]);
});

test("promptWords: splits on punctuation but keeps hyphenated, underscored and possessive words", () => {
    assert.deepEqual(promptWords("t-shirt; long_hair. girl's hat!dog?fox/owl"), [
        "t-shirt",
        "long_hair",
        "girl's",
        "hat",
        "dog",
        "fox",
        "owl",
    ]);
});

test("promptWords: non-ASCII words", () => {
    assert.deepEqual(promptWords("Café, niño, 猫, Straße"), ["café", "niño", "猫", "straße"]);
});

test("promptWords: at most 40 words by default, limit is configurable", () => {
    const many = Array.from({ length: 60 }, (_, i) => "word" + i).join(", ");
    const words = promptWords(many);
    assert.equal(words.length, 40);
    assert.equal(segret.MAX_CHIPS, 40);
    assert.equal(words[0], "word0");
    assert.equal(words[39], "word39");
    assert.deepEqual(promptWords(many, 3), ["word0", "word1", "word2"]);
});

test("promptWords: a realistic WebUI prompt", () => {
    const prompt =
        "masterpiece, best quality, (photo of a cat:1.3) and a [dog:wolf:0.4] in the park, " +
        "<lora:add_detail:0.6>, ((sunset)) BREAK traffic light, 8k";
    assert.deepEqual(promptWords(prompt), [
        "masterpiece",
        "best",
        "quality",
        "cat",
        "dog",
        "wolf",
        "park",
        "sunset",
        "traffic",
        "light",
        "8k",
    ]);
});

// ------------------------------------------------------------------------------------------ parseConcepts

test("parseConcepts: split, trim, collapse spaces, drop empties", () => {
    assert.deepEqual(parseConcepts(" cat ,  traffic   light,, ,dog "), ["cat", "traffic light", "dog"]);
    assert.deepEqual(parseConcepts("cat\tand\ndog"), ["cat and dog"]);
});

test("parseConcepts: case-insensitive duplicates keep the first spelling", () => {
    assert.deepEqual(parseConcepts("Cat, dog, CAT, cat, Traffic Light, traffic  light"), [
        "Cat",
        "dog",
        "Traffic Light",
    ]);
});

test("parseConcepts: empty and non-string input", () => {
    assert.deepEqual(parseConcepts(""), []);
    assert.deepEqual(parseConcepts(" , ,"), []);
    assert.deepEqual(parseConcepts(null), []);
    assert.deepEqual(parseConcepts(undefined), []);
});

// ------------------------------------------------------------------------------------------ toggleConcept

test("toggleConcept: adds an absent word at the end", () => {
    assert.equal(toggleConcept("", "cat"), "cat");
    assert.equal(toggleConcept("cat", "dog"), "cat, dog");
    assert.equal(toggleConcept("cat, dog", "traffic light"), "cat, dog, traffic light");
});

test("toggleConcept: removes a present word, case-insensitively", () => {
    assert.equal(toggleConcept("cat, dog", "cat"), "dog");
    assert.equal(toggleConcept("cat, dog", "DOG"), "cat");
    assert.equal(toggleConcept("Cat", "cat"), "");
    assert.equal(toggleConcept("cat, Traffic  Light, dog", "traffic light"), "cat, dog");
});

test("toggleConcept: normalizes the list it returns", () => {
    assert.equal(toggleConcept(" cat ,, dog ,CAT", "owl"), "cat, dog, owl");
    assert.equal(toggleConcept("cat,dog", "  owl  "), "cat, dog, owl");
});

test("toggleConcept: twice is a round trip", () => {
    const once = toggleConcept("cat, dog", "owl");
    assert.equal(toggleConcept(once, "owl"), "cat, dog");
});

test("toggleConcept: an empty word leaves the text unchanged", () => {
    assert.equal(toggleConcept("cat, dog", ""), "cat, dog");
    assert.equal(toggleConcept("cat, dog", "   "), "cat, dog");
    assert.equal(toggleConcept(null, "cat"), "cat");
});

// ------------------------------------------------------------------------------------------ chipModel

test("chipModel: prompt words, selected concepts, extra concepts, missing ones", () => {
    const chips = chipModel("a cat next to a (traffic light:1.2)", "CAT, traffic light, zebra");
    assert.deepEqual(chips, [
        { word: "cat", selected: true, missing: false },
        { word: "next", selected: false, missing: false },
        { word: "traffic", selected: false, missing: false },
        { word: "light", selected: false, missing: false },
        { word: "traffic light", selected: true, missing: false },
        { word: "zebra", selected: true, missing: true },
    ]);
});

test("chipModel: a concept inside a longer word is reported missing", () => {
    const chips = chipModel("concatenated strings", "cat");
    assert.deepEqual(chips[chips.length - 1], { word: "cat", selected: true, missing: true });
});

test("cleanPrompt: removes tags, weights, brackets and keywords", () => {
    assert.equal(cleanPrompt("<lora:x:0.5> (cat:1.2) BREAK [a:b:0.3]"), "cat , a b");
});

// ------------------------------------------------------------------------------------------ loading

test("loading in node exposes the API and does not throw", () => {
    for (const name of ["promptWords", "parseConcepts", "toggleConcept", "chipModel", "refresh"]) {
        assert.equal(typeof segret[name], "function", name);
    }
    assert.equal(globalThis.segret, segret); // no window in node: the global object gets it
    assert.doesNotThrow(() => segret.refresh()); // no document at all
});

test("loading as a classic script in an empty sandbox does not throw", () => {
    const sandbox = {};
    vm.runInNewContext(fs.readFileSync(SCRIPT, "utf8"), sandbox, { filename: "segret.js" });
    assert.equal(typeof sandbox.segret.promptWords, "function");
    assert.deepEqual(Array.from(sandbox.segret.promptWords("a (cat:1.1)")), ["cat"]);
});

// ------------------------------------------------------------------------------------------ DOM glue (fake DOM)

class FakeElement extends EventTarget {
    constructor(tag, doc) {
        super();
        this.tagName = tag.toUpperCase();
        this.ownerDocument = doc;
        this.parentNode = null;
        this.children = [];
        this.attributes = {};
        this.id = "";
        this.className = "";
        this.value = "";
        this.ownText = "";
    }
    get firstChild() {
        return this.children[0] || null;
    }
    get isConnected() {
        let node = this;
        while (node.parentNode) node = node.parentNode;
        return node === this.ownerDocument;
    }
    get textContent() {
        return this.ownText + this.children.map((c) => c.textContent).join("");
    }
    set textContent(text) {
        this.children.forEach((c) => (c.parentNode = null));
        this.children = [];
        this.ownText = String(text);
    }
    appendChild(child) {
        if (child.parentNode) child.parentNode.removeChild(child);
        child.parentNode = this;
        this.children.push(child);
        return child;
    }
    removeChild(child) {
        const at = this.children.indexOf(child);
        if (at < 0) throw new Error("not a child");
        this.children.splice(at, 1);
        child.parentNode = null;
        return child;
    }
    setAttribute(name, value) {
        this.attributes[name] = String(value);
        if (name === "id") this.id = String(value);
        if (name === "class") this.className = String(value);
    }
    getAttribute(name) {
        return name in this.attributes ? this.attributes[name] : null;
    }
    matches(simple) {
        if (simple.startsWith("#")) return this.id === simple.slice(1);
        if (simple.startsWith(".")) return this.className.split(/\s+/).includes(simple.slice(1));
        return this.tagName === simple.toUpperCase();
    }
    *descendants() {
        for (const child of this.children) {
            yield child;
            yield* child.descendants();
        }
    }
    // Enough of querySelector for "tag", "#id", ".class" and descendant combinations of them.
    querySelector(selector) {
        const parts = selector.trim().split(/\s+/);
        for (const el of this.descendants()) {
            if (!el.matches(parts[parts.length - 1])) continue;
            let need = parts.length - 2;
            for (let up = el.parentNode; up && need >= 0; up = up.parentNode) {
                if (up.matches && up.matches(parts[need])) need--;
            }
            if (need < 0) return el;
        }
        return null;
    }
    querySelectorAll(selector) {
        const last = selector.trim().split(/\s+/).pop();
        return [...this.descendants()].filter((el) => el.matches(last) && this.querySelector(selector));
    }
    click() {
        this.dispatchEvent(new Event("click", { bubbles: true }));
    }
}

class FakeDocument extends FakeElement {
    constructor() {
        super("#document", null);
        this.ownerDocument = this;
    }
    createElement(tag) {
        return new FakeElement(tag, this);
    }
}

function el(doc, tag, id, className, ...children) {
    const node = doc.createElement(tag);
    if (id) node.setAttribute("id", id);
    if (className) node.className = className;
    children.forEach((c) => node.appendChild(c));
    return node;
}

// A page like the WebUI's: textboxes are a div#elem_id around a label and a textarea; gr.HTML is a div#elem_id
// around a .prose div.
function webuiPage(tabs, { attach = true } = {}) {
    const doc = new FakeDocument();
    const root = el(doc, "div", "", "gradio-container");
    if (attach) doc.appendChild(root);
    const fields = {};
    for (const tab of tabs) {
        const prompt = el(doc, "textarea");
        const concepts = el(doc, "textarea");
        const prose = el(doc, "div", "", "prose segret-chips");
        root.appendChild(el(doc, "div", `${tab}_prompt`, "", el(doc, "label", "", "", prompt)));
        root.appendChild(el(doc, "div", `segret_${tab}_concepts`, "", el(doc, "label", "", "", concepts)));
        root.appendChild(el(doc, "div", `segret_${tab}_chips`, "block segret-chips", prose));
        fields[tab] = { prompt, concepts, prose };
    }
    return { doc, root, fields };
}

function loadInPage(doc, extra = {}) {
    const loaded = [];
    const updated = [];
    const warnings = [];
    const sandbox = {
        document: doc,
        gradioApp: () => doc,
        onUiLoaded: (fn) => loaded.push(fn),
        onUiUpdate: (fn) => updated.push(fn),
        setTimeout,
        clearTimeout,
        Event,
        console: { warn: (...args) => warnings.push(args), log() {}, error() {} },
        ...extra,
    };
    sandbox.window = sandbox;
    vm.runInNewContext(fs.readFileSync(SCRIPT, "utf8"), sandbox, { filename: "segret.js" });
    return { sandbox, loaded, updated, warnings };
}

const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function chips(prose) {
    const list = prose.querySelector(".segret-chip-list");
    return list ? list.children.filter((c) => c.tagName === "BUTTON") : [];
}

function setValue(textarea, value) {
    textarea.value = value;
    textarea.dispatchEvent(new Event("input", { bubbles: true }));
}

test("DOM: chips render on UI load, with title, type=button and selection state", async () => {
    const { fields, doc } = webuiPage(["txt2img", "img2img"]);
    fields.txt2img.prompt.value = "a photo of a (cat:1.2) and a dog <lora:x:1>";
    fields.txt2img.concepts.value = "dog";
    const { loaded, updated, warnings } = loadInPage(doc);
    assert.equal(loaded.length, 1);
    assert.equal(updated.length, 1);
    loaded[0]();
    await wait(220);
    const buttons = chips(fields.txt2img.prose);
    assert.deepEqual(
        buttons.map((b) => b.textContent),
        ["cat", "dog"],
    );
    for (const b of buttons) {
        assert.equal(b.getAttribute("type"), "button");
        assert.match(b.getAttribute("title"), /click to add\/remove as an A-STAR concept/);
        assert.ok(b.className.split(" ").includes("segret-chip"));
    }
    assert.ok(!buttons[0].className.includes("segret-chip-selected"));
    assert.ok(buttons[1].className.split(" ").includes("segret-chip-selected"));
    assert.equal(buttons[1].getAttribute("aria-pressed"), "true");
    // img2img has an empty prompt: a hint, no buttons
    assert.deepEqual(chips(fields.img2img.prose), []);
    assert.ok(fields.img2img.prose.querySelector(".segret-chip-hint"));
    assert.deepEqual(warnings, []);
});

test("DOM: clicking a chip toggles the concept and fires a bubbling input event", async () => {
    const { fields, doc } = webuiPage(["txt2img"]);
    fields.txt2img.prompt.value = "cat, dog, owl";
    fields.txt2img.concepts.value = "cat";
    const { sandbox, loaded } = loadInPage(doc);
    const seen = [];
    fields.txt2img.concepts.addEventListener("input", (e) => seen.push([e.target, e.bubbles, e.target.value]));
    loaded[0]();
    sandbox.segret.refresh();
    const dog = chips(fields.txt2img.prose).find((b) => b.textContent === "dog");
    dog.click();
    assert.equal(fields.txt2img.concepts.value, "cat, dog");
    assert.deepEqual(seen, [[fields.txt2img.concepts, true, "cat, dog"]]);
    // re-rendered right away: dog is now selected
    const again = chips(fields.txt2img.prose).find((b) => b.textContent === "dog");
    assert.ok(again.className.includes("segret-chip-selected"));
    // click cat (selected) -> removed
    chips(fields.txt2img.prose)
        .find((b) => b.textContent === "cat")
        .click();
    assert.equal(fields.txt2img.concepts.value, "dog");
    assert.ok(!chips(fields.txt2img.prose)[0].className.includes("segret-chip-selected"));
});

test("DOM: the WebUI's updateInput helper is used when present", () => {
    const { fields, doc } = webuiPage(["txt2img"]);
    fields.txt2img.prompt.value = "cat";
    const calls = [];
    const { sandbox, loaded } = loadInPage(doc, { updateInput: (target) => calls.push(target.value) });
    loaded[0]();
    sandbox.segret.refresh();
    chips(fields.txt2img.prose)[0].click();
    assert.deepEqual(calls, ["cat"]);
});

test("DOM: typing in the prompt re-renders after a debounce, once", async () => {
    const { fields, doc } = webuiPage(["txt2img"]);
    fields.txt2img.prompt.value = "cat";
    const { sandbox, loaded } = loadInPage(doc);
    loaded[0]();
    sandbox.segret.refresh();
    const listBefore = fields.txt2img.prose.querySelector(".segret-chip-list");
    setValue(fields.txt2img.prompt, "cat, d");
    setValue(fields.txt2img.prompt, "cat, do");
    setValue(fields.txt2img.prompt, "cat, dog");
    assert.deepEqual(
        chips(fields.txt2img.prose).map((b) => b.textContent),
        ["cat"],
        "not re-rendered synchronously",
    );
    await wait(60);
    assert.deepEqual(
        chips(fields.txt2img.prose).map((b) => b.textContent),
        ["cat"],
        "still debouncing",
    );
    await wait(200);
    assert.deepEqual(
        chips(fields.txt2img.prose).map((b) => b.textContent),
        ["cat", "dog"],
    );
    assert.equal(fields.txt2img.prose.querySelector(".segret-chip-list"), listBefore, "list container reused");
    // typing in the concepts box marks chips too
    setValue(fields.txt2img.concepts, "DOG");
    await wait(220);
    const dog = chips(fields.txt2img.prose).find((b) => b.textContent === "dog");
    assert.ok(dog.className.includes("segret-chip-selected"));
});

test("DOM: onUiUpdate with nothing changed does not rewrite the chips (no update loop)", async () => {
    const { fields, doc } = webuiPage(["txt2img"]);
    fields.txt2img.prompt.value = "cat dog";
    const { sandbox, loaded, updated } = loadInPage(doc);
    loaded[0]();
    sandbox.segret.refresh();
    const first = chips(fields.txt2img.prose)[0];
    updated[0]([]);
    updated[0]([]);
    await wait(220);
    assert.equal(chips(fields.txt2img.prose)[0], first);
    // a value set without any event (e.g. paste of infotext) is picked up on the next UI update
    fields.txt2img.prompt.value = "owl";
    updated[0]([]);
    await wait(220);
    assert.deepEqual(
        chips(fields.txt2img.prose).map((b) => b.textContent),
        ["owl"],
    );
});

test("DOM: elements appearing later (closed accordion, lazy tab) are bound on a UI update", async () => {
    const page = webuiPage(["txt2img"], { attach: false });
    const { loaded, updated, warnings } = loadInPage(page.doc);
    loaded[0]();
    await wait(200);
    page.doc.appendChild(page.root);
    page.fields.txt2img.prompt.value = "cat";
    updated[0]([]);
    await wait(220);
    assert.deepEqual(
        chips(page.fields.txt2img.prose).map((b) => b.textContent),
        ["cat"],
    );
    setValue(page.fields.txt2img.prompt, "cat owl");
    await wait(220);
    assert.deepEqual(
        chips(page.fields.txt2img.prose).map((b) => b.textContent),
        ["cat", "owl"],
    );
    assert.deepEqual(warnings, []);
});

test("DOM: missing elements never throw", async () => {
    // nothing at all
    let page = loadInPage(new FakeDocument());
    assert.doesNotThrow(() => page.loaded[0]());
    assert.doesNotThrow(() => page.updated[0]([]));
    assert.doesNotThrow(() => page.sandbox.segret.refresh());
    // chips container but no prompt / concepts textbox: selected concepts can't exist, a hint is shown
    const doc = new FakeDocument();
    const prose = el(doc, "div", "", "prose");
    doc.appendChild(el(doc, "div", "segret_img2img_chips", "", prose));
    page = loadInPage(doc);
    page.loaded[0]();
    page.sandbox.segret.refresh();
    assert.deepEqual(chips(prose), []);
    assert.ok(prose.querySelector(".segret-chip-hint"));
    // gradioApp throwing falls back to document
    const broken = webuiPage(["txt2img"]);
    broken.fields.txt2img.prompt.value = "cat";
    page = loadInPage(broken.doc, {
        gradioApp: () => {
            throw new Error("no app yet");
        },
    });
    assert.doesNotThrow(() => page.loaded[0]());
    page.sandbox.segret.refresh();
    assert.deepEqual(
        chips(broken.fields.txt2img.prose).map((b) => b.textContent),
        ["cat"],
    );
    await wait(200);
    assert.deepEqual(page.warnings, []);
});

test("DOM: prompt text is never interpreted as markup", () => {
    const { fields, doc } = webuiPage(["txt2img"]);
    fields.txt2img.prompt.value = "<img src=x onerror=alert(1)> cat";
    fields.txt2img.concepts.value = "<b>bold</b>";
    const { sandbox, loaded } = loadInPage(doc);
    loaded[0]();
    sandbox.segret.refresh();
    const words = chips(fields.txt2img.prose).map((b) => b.textContent);
    assert.deepEqual(words, ["cat", "<b>bold</b>"]);
    const last = chips(fields.txt2img.prose)[1];
    assert.equal(last.children.length, 0);
    assert.ok(last.className.includes("segret-chip-missing"));
});

test("DOM: a chip list removed by gradio is re-created", () => {
    const { fields, doc } = webuiPage(["txt2img"]);
    fields.txt2img.prompt.value = "cat";
    const { sandbox, loaded } = loadInPage(doc);
    loaded[0]();
    sandbox.segret.refresh();
    fields.txt2img.prose.textContent = ""; // gradio re-rendered the HTML value
    sandbox.segret.refresh();
    assert.deepEqual(
        chips(fields.txt2img.prose).map((b) => b.textContent),
        ["cat"],
    );
});

test("DOM: tooltips from the data-tips holder become titles; existing titles and bad JSON are left alone", () => {
    const { doc, root } = webuiPage(["txt2img", "img2img"]);
    const header = el(doc, "div", "", "label-wrap");
    root.appendChild(el(doc, "div", "segret_txt2img", "input-accordion", header));
    const slider = el(doc, "div", "segret_txt2img_seg_weight", "");
    const titled = el(doc, "div", "segret_txt2img_step_size", "");
    titled.setAttribute("title", "set by the WebUI");
    root.appendChild(slider);
    root.appendChild(titled);
    const holder = el(doc, "span", "", "segret-tips");
    holder.setAttribute(
        "data-tips",
        JSON.stringify({
            segret_txt2img: "Keep the concepts apart",
            segret_txt2img_seg_weight: "Weight of the segregation loss",
            segret_txt2img_step_size: "Scale of the update",
            segret_txt2img_not_rendered: "nothing to attach to",
        }),
    );
    doc.querySelector("#segret_txt2img_chips").appendChild(holder);
    const broken = el(doc, "span", "", "segret-tips");
    broken.setAttribute("data-tips", "{not json");
    doc.querySelector("#segret_img2img_chips").appendChild(broken);
    const { loaded, warnings } = loadInPage(doc);
    loaded[0]();
    assert.equal(header.getAttribute("title"), "Keep the concepts apart");
    assert.equal(doc.querySelector("#segret_txt2img").getAttribute("title"), null, "the header, not the whole body");
    assert.equal(slider.getAttribute("title"), "Weight of the segregation loss");
    assert.equal(titled.getAttribute("title"), "set by the WebUI");
    assert.deepEqual(warnings, []);
});
