/*
 * sd-webui-segret: the Layout box editor in the A-STAR accordion (one box per concept, A-STAR paper section 5).
 *
 * The "Boxes" textbox (JSON {"cat": [x0, y0, x1, y1]}, fractions of the image, origin top left) is the only
 * state: the editor draws it in a stage with the image's aspect ratio, and every drag, resize, number edit or
 * delete writes it back (with an input event, so gradio sends it with the generation). Pure helpers at the top
 * use no DOM and are exposed as `window.segretLayout` (and `module.exports` under node, for
 * javascript/tests/segret_layout.test.js). Classic <script>, no modules, no dependencies.
 */
(function (root) {
    "use strict";

    var TABS = ["txt2img", "img2img"];
    // the same colours as segret_lib/render/overlays.py gives the concepts in the overlay pictures
    var PALETTE = ["#ff5a5a", "#4da3ff", "#4fd67a", "#ffb23f", "#c47dff", "#ff6fc8", "#3fdad8", "#e0e04a"];
    var DIGITS = 4; // the engine keeps boxes at 1e-4 of the image
    var MIN_SIZE = 0.02; // smallest box side while drawing or resizing, as a fraction of the image
    var HANDLE = 0.04; // corner grab distance, as a fraction of the stage
    var STAGE_MAX = 320; // stage's longest side, CSS pixels

    function asText(value) {
        return typeof value === "string" ? value : value == null ? "" : String(value);
    }

    function clamp01(v) {
        return v < 0 ? 0 : v > 1 ? 1 : v;
    }

    function roundFrac(v) {
        var f = Math.pow(10, DIGITS);
        return Math.round(clamp01(Number(v)) * f) / f;
    }

    function keyOf(name) {
        return asText(name).replace(/\s+/g, " ").trim().toLowerCase();
    }

    /** Concepts textbox text -> names in order (comma-separated, trimmed, duplicates of any case dropped). */
    function splitConcepts(text) {
        var seen = Object.create(null);
        var out = [];
        asText(text)
            .split(",")
            .forEach(function (part) {
                var word = part.replace(/\s+/g, " ").trim();
                if (word && !seen[word.toLowerCase()]) {
                    seen[word.toLowerCase()] = true;
                    out.push(word);
                }
            });
        return out;
    }

    function validBox(box) {
        if (!Array.isArray(box) || box.length !== 4) return false;
        for (var i = 0; i < 4; i++) {
            if (typeof box[i] !== "number" || !isFinite(box[i]) || box[i] < 0 || box[i] > 1) return false;
        }
        return box[0] < box[2] && box[1] < box[3];
    }

    /**
     * Boxes textbox text -> {entries: [{name, box}], error}. An empty text is no boxes; text that is not a JSON
     * object of 4-number boxes gives an error message (the entries that were readable are kept).
     */
    function parseLayout(text) {
        var raw = asText(text).trim();
        if (!raw) return { entries: [], error: null };
        var data;
        try {
            data = JSON.parse(raw);
        } catch (e) {
            return { entries: [], error: "not valid JSON" };
        }
        if (!data || typeof data !== "object" || Array.isArray(data)) {
            return { entries: [], error: 'expected {"concept": [x0, y0, x1, y1], ...}' };
        }
        var entries = [];
        var error = null;
        Object.keys(data).forEach(function (name) {
            var box = Array.isArray(data[name]) ? data[name].map(Number) : null;
            if (validBox(box)) entries.push({ name: name, box: box });
            else if (!error) error = "box '" + name + "' must be 4 fractions x0 < x1, y0 < y1 in 0..1";
        });
        return { entries: entries, error: error };
    }

    /** [{name, box}] -> the Boxes textbox text (rounded to DIGITS; "" when there is no box). */
    function serializeLayout(entries) {
        var obj = {};
        var any = false;
        (entries || []).forEach(function (e) {
            if (e && e.box && validBox(e.box)) {
                obj[e.name] = e.box.map(roundFrac);
                any = true;
            }
        });
        return any ? JSON.stringify(obj) : "";
    }

    function colourFor(index) {
        return PALETTE[((index % PALETTE.length) + PALETTE.length) % PALETTE.length];
    }

    /**
     * What the editor shows: each concept with its colour and box (or null), and boxes that name no concept
     * (orphans: the engine would refuse them, so the editor lists them for deletion).
     */
    function editorModel(conceptsText, layoutText) {
        var parsed = parseLayout(layoutText);
        var byKey = Object.create(null);
        parsed.entries.forEach(function (e) {
            byKey[keyOf(e.name)] = e;
        });
        var used = Object.create(null);
        var concepts = splitConcepts(conceptsText).map(function (word, i) {
            var e = byKey[keyOf(word)];
            if (e) used[keyOf(word)] = true;
            return { word: word, colour: colourFor(i), box: e ? e.box.slice() : null };
        });
        var orphans = parsed.entries.filter(function (e) {
            return !used[keyOf(e.name)];
        });
        return { concepts: concepts, orphans: orphans, error: parsed.error };
    }

    /** The model's boxes back as entries (concepts in order, then orphans). */
    function modelEntries(model) {
        var out = [];
        model.concepts.forEach(function (c) {
            if (c.box) out.push({ name: c.word, box: c.box });
        });
        model.orphans.forEach(function (o) {
            out.push({ name: o.name, box: o.box });
        });
        return out;
    }

    /** A box spanned by two points (fractions), clamped to the image and at least MIN_SIZE on each side. */
    function boxFromPoints(ax, ay, bx, by) {
        var x0 = clamp01(Math.min(ax, bx));
        var x1 = clamp01(Math.max(ax, bx));
        var y0 = clamp01(Math.min(ay, by));
        var y1 = clamp01(Math.max(ay, by));
        if (x1 - x0 < MIN_SIZE) {
            x1 = Math.min(1, x0 + MIN_SIZE);
            x0 = x1 - MIN_SIZE;
        }
        if (y1 - y0 < MIN_SIZE) {
            y1 = Math.min(1, y0 + MIN_SIZE);
            y0 = y1 - MIN_SIZE;
        }
        return [x0, y0, x1, y1].map(roundFrac);
    }

    /** The box moved by (dx, dy), kept whole inside the image. */
    function moveBox(box, dx, dy) {
        var w = box[2] - box[0];
        var h = box[3] - box[1];
        var x0 = Math.min(Math.max(box[0] + dx, 0), 1 - w);
        var y0 = Math.min(Math.max(box[1] + dy, 0), 1 - h);
        return [x0, y0, x0 + w, y0 + h].map(roundFrac);
    }

    /** The box with one corner ("nw", "ne", "sw", "se") dragged to (x, y); the opposite corner stays. */
    function resizeBox(box, corner, x, y) {
        var ax = corner.indexOf("w") >= 0 ? box[2] : box[0];
        var ay = corner.indexOf("n") >= 0 ? box[3] : box[1];
        return boxFromPoints(ax, ay, x, y);
    }

    /**
     * What a press at (x, y) grabs: {index, mode} with mode a corner ("nw", "ne", "sw", "se") within `handle`
     * of it, or "move" inside the box; the topmost (last drawn) box first; null for empty space.
     */
    function hitTest(boxes, x, y, handle) {
        var r = typeof handle === "number" ? handle : HANDLE;
        for (var i = boxes.length - 1; i >= 0; i--) {
            var b = boxes[i];
            if (!b) continue;
            var corners = { nw: [b[0], b[1]], ne: [b[2], b[1]], sw: [b[0], b[3]], se: [b[2], b[3]] };
            for (var name in corners) {
                if (Math.abs(x - corners[name][0]) <= r && Math.abs(y - corners[name][1]) <= r) {
                    return { index: i, mode: name };
                }
            }
        }
        for (var j = boxes.length - 1; j >= 0; j--) {
            var c = boxes[j];
            if (c && x >= c[0] && x <= c[2] && y >= c[1] && y <= c[3]) return { index: j, mode: "move" };
        }
        return null;
    }

    /** Stage size in CSS pixels for an image of width x height: the longest side `max`, the image's aspect. */
    function stageSize(width, height, max) {
        var w = Number(width) > 0 ? Number(width) : 512;
        var h = Number(height) > 0 ? Number(height) : 512;
        var m = max || STAGE_MAX;
        var s = m / Math.max(w, h);
        return { width: Math.round(w * s), height: Math.round(h * s) };
    }

    var api = {
        PALETTE: PALETTE.slice(),
        MIN_SIZE: MIN_SIZE,
        splitConcepts: splitConcepts,
        parseLayout: parseLayout,
        serializeLayout: serializeLayout,
        editorModel: editorModel,
        modelEntries: modelEntries,
        boxFromPoints: boxFromPoints,
        moveBox: moveBox,
        resizeBox: resizeBox,
        hitTest: hitTest,
        stageSize: stageSize,
        colourFor: colourFor,
        roundFrac: roundFrac,
    };

    // ------------------------------------------------------------------------------------------ DOM glue

    var state = {}; // tab -> {active, drag, signature, els}

    function app() {
        try {
            if (typeof root.gradioApp === "function") {
                var a = root.gradioApp();
                if (a) return a;
            }
        } catch (e) {
            /* fall through */
        }
        return typeof root.document !== "undefined" ? root.document : null;
    }

    function query(scope, selector) {
        try {
            return scope && typeof scope.querySelector === "function" ? scope.querySelector(selector) : null;
        } catch (e) {
            return null;
        }
    }

    function field(scope, selector) {
        var el = query(scope, selector);
        if (!el) return null;
        var tag = el.tagName ? String(el.tagName).toLowerCase() : "";
        if (tag === "textarea" || tag === "input") return el;
        return query(el, "textarea") || query(el, "input");
    }

    function elements(tab) {
        var a = app();
        return {
            host: query(a, "#segret_" + tab + "_layout_editor"),
            layout: field(a, "#segret_" + tab + "_layout"),
            concepts: field(a, "#segret_" + tab + "_concepts"),
            width: field(a, "#" + tab + "_width"),
            height: field(a, "#" + tab + "_height"),
        };
    }

    function tabState(tab) {
        if (!state[tab]) state[tab] = { active: null, drag: null, signature: null, bound: {} };
        return state[tab];
    }

    function setFieldValue(el, value) {
        if (el.value === value) return;
        el.value = value;
        if (typeof root.updateInput === "function") {
            root.updateInput(el);
        } else if (typeof root.Event === "function" && typeof el.dispatchEvent === "function") {
            el.dispatchEvent(new root.Event("input", { bubbles: true }));
        }
    }

    function make(doc, tag, className, text) {
        var node = doc.createElement(tag);
        if (className) node.className = className;
        if (text != null) node.textContent = text; // never innerHTML: concept names are user text
        return node;
    }

    function clear(node) {
        while (node.firstChild) node.removeChild(node.firstChild);
    }

    function currentModel(tab) {
        var els = elements(tab);
        return editorModel(els.concepts ? els.concepts.value : "", els.layout ? els.layout.value : "");
    }

    function writeModel(tab, model) {
        var els = elements(tab);
        if (els.layout) setFieldValue(els.layout, serializeLayout(modelEntries(model)));
        render(tab, true);
    }

    function activeWord(st, model) {
        var words = model.concepts.map(function (c) {
            return c.word;
        });
        if (st.active && words.indexOf(st.active) >= 0) return st.active;
        var free = model.concepts.filter(function (c) {
            return !c.box;
        })[0];
        st.active = free ? free.word : words[0] || null;
        return st.active;
    }

    function pointFrac(stage, event) {
        var r = typeof stage.getBoundingClientRect === "function" ? stage.getBoundingClientRect() : null;
        if (!r || !r.width || !r.height) return null;
        return { x: clamp01((event.clientX - r.left) / r.width), y: clamp01((event.clientY - r.top) / r.height) };
    }

    function pct(v) {
        return (v * 100).toFixed(2) + "%";
    }

    function render(tab, force) {
        var st = tabState(tab);
        var els = elements(tab);
        if (!els.host) return;
        var mount = query(els.host, ".segret-layout-editor") || els.host;
        var signature = [
            els.concepts ? els.concepts.value : "",
            els.layout ? els.layout.value : "",
            els.width ? els.width.value : "",
            els.height ? els.height.value : "",
            st.active,
        ].join("\u0000");
        var fresh = !!(st.parts && st.parts.mount === mount && st.parts.stage.parentNode === mount);
        if (!force && fresh && signature === st.signature) return; // nothing changed: no DOM writes
        st.signature = signature;
        var doc = mount.ownerDocument || root.document;
        var model = currentModel(tab);
        var active = activeWord(st, model);
        var parts = editorParts(tab, st, mount, doc);
        var toolbar = parts.toolbar;
        var stage = parts.stage;
        var table = parts.table;
        clear(toolbar);
        clear(stage);
        clear(table);

        if (!model.concepts.length) {
            toolbar.appendChild(make(doc, "span", "segret-layout-hint", "Type concepts above to draw their boxes."));
        }
        model.concepts.forEach(function (c) {
            var b = make(doc, "button", "segret-layout-concept" + (c.word === active ? " segret-layout-active" : ""));
            b.setAttribute("type", "button");
            b.setAttribute("data-word", c.word);
            b.setAttribute("title", c.box ? "drag in the image to redraw this box" : "drag in the image to draw a box");
            b.style.borderColor = c.colour;
            var swatch = make(doc, "span", "segret-layout-swatch");
            swatch.style.background = c.colour;
            b.appendChild(swatch);
            b.appendChild(make(doc, "span", "", c.word + (c.box ? "" : " (no box)")));
            b.addEventListener("click", function (e) {
                if (e && e.preventDefault) e.preventDefault();
                st.active = c.word;
                render(tab, true);
            });
            toolbar.appendChild(b);
        });

        var size = stageSize(els.width ? els.width.value : 512, els.height ? els.height.value : 512);
        stage.style.width = size.width + "px";
        stage.style.height = size.height + "px";
        model.concepts.forEach(function (c, i) {
            if (!c.box) return;
            var box = make(doc, "div", "segret-layout-box" + (c.word === active ? " segret-layout-active" : ""));
            box.setAttribute("data-index", String(i));
            box.style.left = pct(c.box[0]);
            box.style.top = pct(c.box[1]);
            box.style.width = pct(c.box[2] - c.box[0]);
            box.style.height = pct(c.box[3] - c.box[1]);
            box.style.borderColor = c.colour;
            var label = make(doc, "span", "segret-layout-label", c.word);
            label.style.background = c.colour;
            box.appendChild(label);
            ["nw", "ne", "sw", "se"].forEach(function (corner) {
                var h = make(doc, "span", "segret-layout-handle segret-layout-" + corner);
                h.style.background = c.colour;
                box.appendChild(h);
            });
            stage.appendChild(box);
        });
        model.concepts.forEach(function (c) {
            if (!c.box) return;
            table.appendChild(boxRow(doc, tab, c.word, c.colour, c.box, false));
        });
        model.orphans.forEach(function (o) {
            table.appendChild(boxRow(doc, tab, o.name, "#888888", o.box, true));
        });
        if (model.error) table.appendChild(make(doc, "div", "segret-layout-error", "Boxes: " + model.error));
        if (model.concepts.length) {
            table.appendChild(
                make(doc, "div", "segret-layout-hint", "Drag in the image to draw the selected concept's box; drag a " +
                    "box to move it, a corner to resize; Delete removes the selected box."),
            );
        }
    }

    /** The editor's toolbar, stage and table, made once per mount (the stage keeps its listeners while a drag
     * rewrites the boxes inside it). */
    function editorParts(tab, st, mount, doc) {
        if (st.parts && st.parts.mount === mount && st.parts.stage.parentNode === mount) return st.parts;
        clear(mount);
        var toolbar = make(doc, "div", "segret-layout-toolbar");
        var stage = make(doc, "div", "segret-layout-stage");
        var table = make(doc, "div", "segret-layout-table");
        stage.setAttribute("tabindex", "0");
        stage.addEventListener("pointerdown", function (e) {
            onPointerDown(tab, stage, e);
        });
        stage.addEventListener("keydown", function (e) {
            if (e && (e.key === "Delete" || e.key === "Backspace") && st.active) {
                if (e.preventDefault) e.preventDefault();
                setBox(tab, st.active, null);
            }
        });
        mount.appendChild(toolbar);
        mount.appendChild(stage);
        mount.appendChild(table);
        st.parts = { mount: mount, toolbar: toolbar, stage: stage, table: table };
        return st.parts;
    }

    function boxRow(doc, tab, name, colourValue, box, orphan) {
        var row = make(doc, "div", "segret-layout-row" + (orphan ? " segret-layout-orphan" : ""));
        row.setAttribute("data-word", name);
        var label = make(doc, "span", "segret-layout-name", orphan ? name + " (not a concept)" : name);
        label.style.color = colourValue;
        row.appendChild(label);
        ["x0", "y0", "x1", "y1"].forEach(function (key, k) {
            var input = make(doc, "input", "segret-layout-number");
            input.setAttribute("type", "number");
            input.setAttribute("min", "0");
            input.setAttribute("max", "1");
            input.setAttribute("step", "0.01");
            input.setAttribute("title", key);
            input.setAttribute("data-key", key);
            input.value = String(box[k]);
            input.addEventListener("change", function () {
                var next = box.slice();
                next[k] = Number(input.value);
                if (validBox(next)) setBox(tab, name, next.map(roundFrac));
                else render(tab, true); // back to the last valid numbers
            });
            row.appendChild(input);
        });
        var del = make(doc, "button", "segret-layout-delete", "\u00d7");
        del.setAttribute("type", "button");
        del.setAttribute("title", "remove this box");
        del.addEventListener("click", function (e) {
            if (e && e.preventDefault) e.preventDefault();
            setBox(tab, name, null);
        });
        row.appendChild(del);
        return row;
    }

    /** Set (or with null remove) the box of `name` and write the textbox. */
    function setBox(tab, name, box) {
        var model = currentModel(tab);
        var key = keyOf(name);
        var done = false;
        model.concepts.forEach(function (c) {
            if (keyOf(c.word) === key) {
                c.box = box;
                done = true;
            }
        });
        model.orphans = model.orphans.filter(function (o) {
            return keyOf(o.name) !== key;
        });
        if (!done && box) model.orphans.push({ name: name, box: box });
        writeModel(tab, model);
    }

    function onPointerDown(tab, stage, e) {
        var st = tabState(tab);
        var p = pointFrac(stage, e);
        if (!p) return;
        var model = currentModel(tab);
        var boxes = model.concepts.map(function (c) {
            return c.box;
        });
        var hit = hitTest(boxes, p.x, p.y);
        if (hit) {
            st.active = model.concepts[hit.index].word;
            st.drag = { mode: hit.mode, word: st.active, start: p, box: boxes[hit.index].slice() };
        } else {
            var word = activeWord(st, model);
            if (!word) return;
            st.drag = { mode: "draw", word: word, start: p, box: null };
        }
        if (e.preventDefault) e.preventDefault();
        if (typeof stage.setPointerCapture === "function" && e.pointerId != null) {
            try {
                stage.setPointerCapture(e.pointerId);
            } catch (err) {
                /* ignore */
            }
        }
        var move = function (ev) {
            onPointerMove(tab, stage, ev);
        };
        var up = function (ev) {
            onPointerMove(tab, stage, ev);
            stage.removeEventListener("pointermove", move);
            stage.removeEventListener("pointerup", up);
            stage.removeEventListener("pointercancel", up);
            var drawn = st.drag && st.drag.mode === "draw" ? st.drag.word : null;
            st.drag = null;
            if (drawn) {
                // a new box is drawn: select the next concept without one, so boxes can be drawn one after another
                var after = currentModel(tab);
                var words = after.concepts.map(function (c) {
                    return c.word;
                });
                var at = words.indexOf(drawn);
                var next = after.concepts.filter(function (c, i) {
                    return !c.box && i > at;
                })[0];
                if (next) st.active = next.word;
            }
            render(tab, true);
        };
        stage.addEventListener("pointermove", move);
        stage.addEventListener("pointerup", up);
        stage.addEventListener("pointercancel", up);
    }

    function onPointerMove(tab, stage, e) {
        var st = tabState(tab);
        var d = st.drag;
        if (!d) return;
        var p = pointFrac(stage, e);
        if (!p) return;
        var box;
        if (d.mode === "draw") {
            if (Math.abs(p.x - d.start.x) < 0.005 && Math.abs(p.y - d.start.y) < 0.005) return; // a click
            box = boxFromPoints(d.start.x, d.start.y, p.x, p.y);
        } else if (d.mode === "move") {
            box = moveBox(d.box, p.x - d.start.x, p.y - d.start.y);
        } else {
            box = resizeBox(d.box, d.mode, p.x, p.y);
        }
        setBox(tab, d.word, box);
    }

    function bind(tab) {
        var st = tabState(tab);
        var els = elements(tab);
        ["concepts", "layout", "width", "height"].forEach(function (key) {
            var el = els[key];
            if (!el || st.bound[key] === el || typeof el.addEventListener !== "function") return;
            st.bound[key] = el;
            ["input", "change"].forEach(function (type) {
                el.addEventListener(type, function () {
                    safeRender(tab);
                });
            });
        });
    }

    function safeRender(tab) {
        try {
            if (!tabState(tab).drag) render(tab, false);
        } catch (e) {
            if (root.console && root.console.warn) root.console.warn("[segret] layout editor failed:", e);
        }
    }

    function setup() {
        TABS.forEach(function (tab) {
            try {
                bind(tab);
            } catch (e) {
                /* ignore */
            }
            safeRender(tab); // also picks up values set without events (paste infotext)
        });
    }

    api.refresh = function () {
        TABS.forEach(function (tab) {
            bind(tab);
            render(tab, true);
        });
    };
    api.setBox = setBox;
    api.TABS = TABS.slice();

    root.segretLayout = api;
    if (typeof module !== "undefined" && module.exports) module.exports = api;

    if (typeof root.onUiLoaded === "function") {
        root.onUiLoaded(setup);
        if (typeof root.onUiUpdate === "function") root.onUiUpdate(setup);
    }
})(typeof window !== "undefined" ? window : globalThis);
