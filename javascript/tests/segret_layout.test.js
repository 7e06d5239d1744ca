// Tests for javascript/segret_layout.js (the Layout box editor), no npm packages:
// `node --test javascript/tests/segret_layout.test.js`.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const vm = require("node:vm");

const SCRIPT = path.resolve(__dirname, "..", "segret_layout.js");
const L = require(SCRIPT);

// ------------------------------------------------------------------------------------------- pure helpers

test("splitConcepts: commas, spaces, duplicates of any case", () => {
    assert.deepEqual(L.splitConcepts(" cat ,  traffic   light, Cat,, dog"), ["cat", "traffic light", "dog"]);
    assert.deepEqual(L.splitConcepts(""), []);
    assert.deepEqual(L.splitConcepts(null), []);
});

test("parseLayout: empty, valid, invalid JSON and bad boxes", () => {
    assert.deepEqual(L.parseLayout(""), { entries: [], error: null });
    assert.deepEqual(L.parseLayout('{"cat": [0, 0.2, 0.5, 0.9]}'), {
        entries: [{ name: "cat", box: [0, 0.2, 0.5, 0.9] }],
        error: null,
    });
    assert.equal(L.parseLayout("{cat").error, "not valid JSON");
    assert.match(L.parseLayout("[1, 2]").error, /expected/);
    const mixed = L.parseLayout('{"cat": [0.5, 0, 0.4, 1], "dog": [0.5, 0, 1, 1]}');
    assert.deepEqual(mixed.entries, [{ name: "dog", box: [0.5, 0, 1, 1] }]);
    assert.match(mixed.error, /box 'cat'/);
    assert.match(L.parseLayout('{"cat": [0, 0, 1.2, 1]}').error, /box 'cat'/);
    assert.match(L.parseLayout('{"cat": [0, 0, 1]}').error, /box 'cat'/);
});

test("serializeLayout: rounds to 4 digits, drops invalid boxes, empty is ''", () => {
    assert.equal(L.serializeLayout([{ name: "cat", box: [0.123456, 0, 0.5, 1] }]), '{"cat":[0.1235,0,0.5,1]}');
    assert.equal(L.serializeLayout([]), "");
    assert.equal(L.serializeLayout([{ name: "cat", box: [0.5, 0, 0.1, 1] }]), "");
    const text = L.serializeLayout([
        { name: "cat", box: [0, 0, 0.5, 1] },
        { name: "dog", box: [0.5, 0, 1, 1] },
    ]);
    assert.deepEqual(L.parseLayout(text).entries.map((e) => e.name), ["cat", "dog"]);
});

test("editorModel: colours by concept slot, boxes matched case-insensitively, orphans kept", () => {
    const m = L.editorModel("Cat, dog, sofa", '{"cat": [0, 0, 0.5, 1], "bird": [0.1, 0.1, 0.2, 0.2]}');
    assert.deepEqual(
        m.concepts.map((c) => [c.word, c.colour, c.box]),
        [
            ["Cat", L.PALETTE[0], [0, 0, 0.5, 1]],
            ["dog", L.PALETTE[1], null],
            ["sofa", L.PALETTE[2], null],
        ],
    );
    assert.deepEqual(m.orphans, [{ name: "bird", box: [0.1, 0.1, 0.2, 0.2] }]);
    assert.deepEqual(L.modelEntries(m).map((e) => e.name), ["Cat", "bird"]);
});

test("palette matches the overlay colours of segret_lib/render/overlays.py", () => {
    const py = fs.readFileSync(path.resolve(__dirname, "..", "..", "segret_lib", "render", "overlays.py"), "utf8");
    const line = py.split("\n").find((l) => l.startsWith("PALETTE = "));
    assert.deepEqual(JSON.parse("[" + line.slice(line.indexOf("(") + 1, line.lastIndexOf(")")) + "]"), L.PALETTE);
    assert.equal(L.colourFor(8), L.PALETTE[0]);
});

test("boxFromPoints: any drag direction, clamped, minimum size", () => {
    assert.deepEqual(L.boxFromPoints(0.6, 0.8, 0.2, 0.1), [0.2, 0.1, 0.6, 0.8]);
    assert.deepEqual(L.boxFromPoints(-0.5, 0.2, 1.5, 0.4), [0, 0.2, 1, 0.4]);
    const tiny = L.boxFromPoints(0.995, 0.5, 0.999, 0.5);
    assert.ok(tiny[2] - tiny[0] >= L.MIN_SIZE - 1e-9 && tiny[2] <= 1, String(tiny));
    assert.ok(tiny[3] - tiny[1] >= L.MIN_SIZE - 1e-9, String(tiny));
});

test("moveBox keeps the box whole inside the image; resizeBox keeps the opposite corner", () => {
    assert.deepEqual(L.moveBox([0.1, 0.1, 0.4, 0.3], 0.2, 0.1), [0.3, 0.2, 0.6, 0.4]);
    assert.deepEqual(L.moveBox([0.1, 0.1, 0.4, 0.3], 0.9, -0.5), [0.7, 0, 1, 0.2]);
    assert.deepEqual(L.resizeBox([0.2, 0.2, 0.6, 0.6], "se", 0.8, 0.9), [0.2, 0.2, 0.8, 0.9]);
    assert.deepEqual(L.resizeBox([0.2, 0.2, 0.6, 0.6], "nw", 0.1, 0.05), [0.1, 0.05, 0.6, 0.6]);
    // dragging a corner past the opposite one flips the box instead of inverting it
    assert.deepEqual(L.resizeBox([0.2, 0.2, 0.6, 0.6], "ne", 0.1, 0.9), [0.1, 0.6, 0.2, 0.9]);
});

test("hitTest: corners first, topmost box first, empty space is null", () => {
    const boxes = [[0, 0, 0.5, 0.5], null, [0.4, 0.4, 0.9, 0.9]];
    assert.deepEqual(L.hitTest(boxes, 0.45, 0.45), { index: 2, mode: "move" });
    assert.deepEqual(L.hitTest(boxes, 0.1, 0.1), { index: 0, mode: "move" });
    assert.deepEqual(L.hitTest(boxes, 0.89, 0.91), { index: 2, mode: "se" });
    assert.deepEqual(L.hitTest(boxes, 0.01, 0.02), { index: 0, mode: "nw" });
    assert.equal(L.hitTest(boxes, 0.95, 0.1), null);
});

test("stageSize follows the image's aspect ratio", () => {
    assert.deepEqual(L.stageSize(512, 512, 320), { width: 320, height: 320 });
    assert.deepEqual(L.stageSize(768, 512, 300), { width: 300, height: 200 });
    assert.deepEqual(L.stageSize(512, 1024, 300), { width: 150, height: 300 });
    assert.deepEqual(L.stageSize("", undefined, 100), { width: 100, height: 100 });
});

// ------------------------------------------------------------------------------------------ DOM glue (fake DOM)

class Node extends EventTarget {
    constructor(tag, doc) {
        super();
        this.tagName = tag.toUpperCase();
        this.ownerDocument = doc;
        this.parentNode = null;
        this.children = [];
        this.attributes = {};
        this.className = "";
        this.id = "";
        this.value = "";
        this.text = "";
        this.style = {};
    }
    get firstChild() {
        return this.children[0] || null;
    }
    get textContent() {
        return this.text + this.children.map((c) => c.textContent).join("");
    }
    set textContent(t) {
        this.children = [];
        this.text = String(t);
    }
    appendChild(c) {
        if (c.parentNode) c.parentNode.removeChild(c);
        c.parentNode = this;
        this.children.push(c);
        return c;
    }
    removeChild(c) {
        this.children.splice(this.children.indexOf(c), 1);
        c.parentNode = null;
        return c;
    }
    setAttribute(k, v) {
        this.attributes[k] = String(v);
        if (k === "id") this.id = String(v);
    }
    getAttribute(k) {
        return k in this.attributes ? this.attributes[k] : null;
    }
    matches(sel) {
        if (sel.startsWith("#")) return this.id === sel.slice(1);
        if (sel.startsWith(".")) return this.className.split(/\s+/).includes(sel.slice(1));
        return this.tagName === sel.toUpperCase();
    }
    *all() {
        for (const c of this.children) {
            yield c;
            yield* c.all();
        }
    }
    querySelector(sel) {
        const parts = sel.trim().split(/\s+/);
        for (const el of this.all()) {
            if (!el.matches(parts[parts.length - 1])) continue;
            let need = parts.length - 2;
            for (let up = el.parentNode; up && need >= 0; up = up.parentNode) if (up.matches(parts[need])) need--;
            if (need < 0) return el;
        }
        return null;
    }
    findAll(cls) {
        return [...this.all()].filter((e) => e.matches("." + cls));
    }
    getBoundingClientRect() {
        return { left: 100, top: 50, width: 200, height: 100 }; // the stage: 200 x 100 CSS px at (100, 50)
    }
}

function page() {
    const doc = new Node("#document", null);
    doc.ownerDocument = doc;
    doc.createElement = (tag) => new Node(tag, doc);
    const add = (id, tag, cls) => {
        const wrap = doc.createElement("div");
        wrap.setAttribute("id", id);
        const inner = doc.createElement(tag);
        if (cls) inner.className = cls;
        wrap.appendChild(inner);
        doc.appendChild(wrap);
        return inner;
    };
    const concepts = add("segret_txt2img_concepts", "textarea");
    const layout = add("segret_txt2img_layout", "textarea");
    const width = add("txt2img_width", "input");
    const height = add("txt2img_height", "input");
    const mount = add("segret_txt2img_layout_editor", "div", "segret-layout-editor");
    width.value = "768";
    height.value = "384";
    const loaded = [];
    const inputs = [];
    const sandbox = {
        document: doc,
        gradioApp: () => doc,
        onUiLoaded: (fn) => loaded.push(fn),
        onUiUpdate: () => {},
        updateInput: (el) => {
            inputs.push(el.value);
            el.dispatchEvent(new Event("input"));
        },
        Event,
        console: { warn: (...a) => assert.fail("warning: " + a.join(" ")), log() {} },
    };
    sandbox.window = sandbox;
    vm.runInNewContext(fs.readFileSync(SCRIPT, "utf8"), sandbox, { filename: "segret_layout.js" });
    return { doc, concepts, layout, mount, loaded, inputs, sandbox };
}

function pointer(type, x, y) {
    const e = new Event(type);
    e.clientX = 100 + x * 200;
    e.clientY = 50 + y * 100;
    e.pointerId = 1;
    return e;
}

test("DOM: concept buttons, aspect-ratio stage, drawing, moving, resizing and deleting boxes", () => {
    const { concepts, layout, mount, loaded, inputs } = page();
    concepts.value = "cat, dog";
    loaded.forEach((fn) => fn());
    const buttons = mount.findAll("segret-layout-concept");
    assert.deepEqual(buttons.map((b) => b.getAttribute("data-word")), ["cat", "dog"]);
    const stage = mount.querySelector(".segret-layout-stage");
    assert.deepEqual([stage.style.width, stage.style.height], ["320px", "160px"]);

    // draw cat's box (the first concept without a box is selected)
    stage.dispatchEvent(pointer("pointerdown", 0.1, 0.2));
    stage.dispatchEvent(pointer("pointermove", 0.3, 0.5));
    stage.dispatchEvent(pointer("pointerup", 0.4, 0.9));
    assert.deepEqual(JSON.parse(layout.value), { cat: [0.1, 0.2, 0.4, 0.9] });
    assert.equal(mount.querySelector(".segret-layout-stage"), stage, "the stage survives re-rendering");

    // dog is selected next; draw it, then move it by dragging inside
    stage.dispatchEvent(pointer("pointerdown", 0.6, 0.1));
    stage.dispatchEvent(pointer("pointerup", 0.9, 0.8));
    assert.deepEqual(JSON.parse(layout.value).dog, [0.6, 0.1, 0.9, 0.8]);
    stage.dispatchEvent(pointer("pointerdown", 0.75, 0.5));
    stage.dispatchEvent(pointer("pointerup", 0.8, 0.6));
    assert.deepEqual(JSON.parse(layout.value).dog, [0.65, 0.2, 0.95, 0.9]);
    // resize cat by its south-east corner
    stage.dispatchEvent(pointer("pointerdown", 0.4, 0.9));
    stage.dispatchEvent(pointer("pointerup", 0.5, 0.95));
    assert.deepEqual(JSON.parse(layout.value).cat, [0.1, 0.2, 0.5, 0.95]);

    const boxes = mount.findAll("segret-layout-box");
    assert.equal(boxes.length, 2);
    assert.equal(boxes[0].style.left, "10.00%");
    assert.equal(boxes[0].querySelector(".segret-layout-label").textContent, "cat");
    const rows = mount.findAll("segret-layout-row");
    assert.deepEqual(rows.map((r) => r.getAttribute("data-word")), ["cat", "dog"]);

    // numbers: edit x0 of dog; an invalid value is refused
    const x0 = rows[1].querySelector(".segret-layout-number");
    x0.value = "0.7";
    x0.dispatchEvent(new Event("change"));
    assert.deepEqual(JSON.parse(layout.value).dog, [0.7, 0.2, 0.95, 0.9]);
    const again = mount.findAll("segret-layout-row")[1].querySelector(".segret-layout-number");
    again.value = "0.99";
    again.dispatchEvent(new Event("change"));
    assert.deepEqual(JSON.parse(layout.value).dog, [0.7, 0.2, 0.95, 0.9]);

    // delete cat with its row's button, then select dog and delete it with the Delete key
    mount.findAll("segret-layout-row")[0].querySelector(".segret-layout-delete").dispatchEvent(new Event("click"));
    assert.deepEqual(Object.keys(JSON.parse(layout.value)), ["dog"]);
    mount.findAll("segret-layout-concept")[1].dispatchEvent(new Event("click"));
    const key = new Event("keydown");
    key.key = "Delete";
    stage.dispatchEvent(key);
    assert.equal(layout.value, "");
    assert.ok(inputs.length > 5);
});

test("DOM: pasted boxes are shown; boxes of removed concepts are listed as orphans; bad JSON is reported", () => {
    const { concepts, layout, mount, loaded } = page();
    concepts.value = "cat, dog";
    loaded.forEach((fn) => fn());
    layout.value = '{"cat": [0, 0, 0.5, 1], "dog": [0.5, 0, 1, 1]}';
    layout.dispatchEvent(new Event("input"));
    assert.equal(mount.findAll("segret-layout-box").length, 2);
    concepts.value = "cat";
    concepts.dispatchEvent(new Event("input"));
    assert.equal(mount.findAll("segret-layout-box").length, 1);
    const orphan = mount.findAll("segret-layout-orphan");
    assert.equal(orphan.length, 1);
    assert.match(orphan[0].textContent, /dog \(not a concept\)/);
    layout.value = "{oops";
    layout.dispatchEvent(new Event("input"));
    assert.match(mount.querySelector(".segret-layout-error").textContent, /not valid JSON/);
    assert.equal(layout.value, "{oops", "the editor does not overwrite what the user is typing");
});

test("DOM: a concept button selects which box a drag draws", () => {
    const { concepts, layout, mount, loaded } = page();
    concepts.value = "cat, dog";
    loaded.forEach((fn) => fn());
    mount.findAll("segret-layout-concept")[1].dispatchEvent(new Event("click"));
    const stage = mount.querySelector(".segret-layout-stage");
    stage.dispatchEvent(pointer("pointerdown", 0.5, 0.0));
    stage.dispatchEvent(pointer("pointerup", 1.0, 1.0));
    assert.deepEqual(JSON.parse(layout.value), { dog: [0.5, 0, 1, 1] });
    assert.match(mount.querySelector(".segret-layout-active").className, /segret-layout-active/);
});
