/*
 * sd-webui-segret: clickable word chips under the A-STAR "Concepts" textbox.
 *
 * Loaded by the WebUI as a classic <script> (no modules). The pure helpers at the top use no DOM and are
 * exposed as `window.segret` (and `module.exports` under node, for javascript/tests/segret.test.js).
 * The DOM glue below them only runs when the WebUI's onUiLoaded / onUiUpdate hooks exist.
 */
(function (root) {
    "use strict";

    var TABS = ["txt2img", "img2img"];
    var MAX_CHIPS = 40;
    var DEBOUNCE_MS = 150;
    var CHIP_TITLE = "click to add/remove as an A-STAR concept";

    // Small on purpose: articles, conjunctions, common prepositions and "photo of"-style framing words.
    var STOPWORDS = [
        "a", "an", "the", "and", "or", "but", "nor", "of", "with", "without", "in", "on", "at", "to", "for",
        "by", "from", "into", "onto", "as", "is", "are", "was", "were", "be", "it", "its", "this", "that",
        "these", "those", "very", "photo", "photograph", "picture", "image",
    ];
    var STOPWORD_SET = Object.create(null);
    STOPWORDS.forEach(function (w) {
        STOPWORD_SET[w] = true;
    });

    // A word: letters/digits, optionally joined by ' ’ _ - (so "t-shirt", "long_hair", "girl's" stay whole,
    // which is also how they appear in the prompt's tokens).
    var WORD_RE = /[\p{L}\p{N}]+(?:['’_-][\p{L}\p{N}]+)*/gu;
    // Attention / prompt-editing weights and steps: "(cat:1.2)", "[a:b:0.5]", "[a:b:10]", "cat :1.1 AND dog".
    var WEIGHT_RE = /:\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)\s*(?=[)\]\s,|]|$)/g;

    function asText(value) {
        return typeof value === "string" ? value : value == null ? "" : String(value);
    }

    function collapse(text) {
        return asText(text).replace(/\s+/g, " ").trim();
    }

    /** The prompt with extra-network tags, escapes, weights and emphasis brackets removed (one space between). */
    function cleanPrompt(prompt) {
        return collapse(
            asText(prompt)
                .replace(/<[^<>]*>/g, " ") // <lora:name:0.8>, <hypernet:x:1>, <lyco:...>, any <...> tag
                .replace(/\\([()[\]{}\\])/g, " ") // escaped literal brackets \( \)
                .replace(WEIGHT_RE, " ")
                .replace(/\b(?:BREAK|AND)\b/g, " , ")
                .replace(/[()[\]{}|:]/g, " "),
        );
    }

    /**
     * Candidate chip words of a WebUI prompt, lowercase, in order of first appearance, at most `limit`.
     * Extra-network tags, emphasis and prompt-editing syntax are removed ([a:b:0.5] gives both a and b),
     * the BREAK / AND keywords, stopwords, pure numbers and single ASCII characters are dropped.
     */
    function promptWords(prompt, limit) {
        var max = typeof limit === "number" && limit >= 0 ? limit : MAX_CHIPS;
        var text = asText(prompt)
            .replace(/<[^<>]*>/g, " ")
            .replace(WEIGHT_RE, " ");
        var tokens = text.match(WORD_RE) || [];
        var seen = Object.create(null);
        var out = [];
        for (var i = 0; i < tokens.length && out.length < max; i++) {
            var token = tokens[i];
            if (token === "BREAK" || token === "AND") continue; // keywords are uppercase-only in the WebUI
            var word = token.toLowerCase();
            if (STOPWORD_SET[word] || seen[word]) continue;
            if (/^\d+$/.test(word) || /^[\x00-\x7f]$/.test(word)) continue;
            seen[word] = true;
            out.push(word);
        }
        return out;
    }

    /** Concepts textbox text -> list: split on commas, trim, collapse spaces, drop empties and duplicates (any case). */
    function parseConcepts(text) {
        var seen = Object.create(null);
        var out = [];
        asText(text)
            .split(",")
            .forEach(function (part) {
                var word = collapse(part);
                var key = word.toLowerCase();
                if (!word || seen[key]) return;
                seen[key] = true;
                out.push(word);
            });
        return out;
    }

    function hasConcept(text, word) {
        var key = collapse(word).toLowerCase();
        return parseConcepts(text).some(function (c) {
            return c.toLowerCase() === key;
        });
    }

    /** New textbox text with `word` appended (", " separated) if absent, or removed if present (any case). */
    function toggleConcept(text, word) {
        var target = collapse(word);
        if (!target) return asText(text);
        var key = target.toLowerCase();
        var concepts = parseConcepts(text);
        var kept = concepts.filter(function (c) {
            return c.toLowerCase() !== key;
        });
        if (kept.length === concepts.length) kept.push(target);
        return kept.join(", ");
    }

    function escapeRegExp(text) {
        return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    }

    /** Whether `needle` occurs in `haystack` as whole words (not inside a longer word). */
    function containsWord(haystack, needle) {
        if (!needle) return false;
        var re = new RegExp("(?:^|[^\\p{L}\\p{N}])" + escapeRegExp(needle) + "(?![\\p{L}\\p{N}])", "u");
        return re.test(haystack);
    }

    /**
     * What to draw: one chip per prompt word (selected when it is a concept), then one selected chip per concept
     * that is not one of those words (e.g. "traffic light"); `missing` marks concepts not found in the prompt.
     */
    function chipModel(prompt, conceptsText, limit) {
        var concepts = parseConcepts(conceptsText);
        var selected = Object.create(null);
        concepts.forEach(function (c) {
            selected[c.toLowerCase()] = true;
        });
        var words = promptWords(prompt, limit);
        var shown = Object.create(null);
        var chips = words.map(function (w) {
            shown[w] = true;
            return { word: w, selected: !!selected[w], missing: false };
        });
        var haystack = cleanPrompt(prompt).toLowerCase();
        concepts.forEach(function (c) {
            var key = c.toLowerCase();
            if (shown[key]) return;
            shown[key] = true;
            chips.push({ word: c, selected: true, missing: !containsWord(haystack, key) });
        });
        return chips;
    }

    var api = {
        MAX_CHIPS: MAX_CHIPS,
        STOPWORDS: STOPWORDS.slice(),
        promptWords: promptWords,
        parseConcepts: parseConcepts,
        toggleConcept: toggleConcept,
        hasConcept: hasConcept,
        cleanPrompt: cleanPrompt,
        chipModel: chipModel,
    };

    // ------------------------------------------------------------------------------------------ DOM glue

    var state = {}; // tab -> {timer, signature, prompt, concepts, list}

    function app() {
        try {
            if (typeof root.gradioApp === "function") {
                var a = root.gradioApp();
                if (a) return a;
            }
        } catch (e) {
            /* fall through to document */
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

    function isField(el) {
        var tag = el && el.tagName ? String(el.tagName).toLowerCase() : "";
        return tag === "textarea" || tag === "input";
    }

    function field(scope, selector) {
        var el = query(scope, selector);
        if (!el || isField(el)) return el;
        return query(el, "textarea") || query(el, "input");
    }

    function elements(tab) {
        var a = app();
        return {
            prompt: field(a, "#" + tab + "_prompt"),
            concepts: field(a, "#segret_" + tab + "_concepts"),
            chips: query(a, "#segret_" + tab + "_chips"),
        };
    }

    function tabState(tab) {
        if (!state[tab]) state[tab] = { timer: null, signature: null, prompt: null, concepts: null, list: null };
        return state[tab];
    }

    function setFieldValue(el, value) {
        el.value = value;
        if (typeof root.updateInput === "function") {
            root.updateInput(el); // the WebUI helper: dispatches a bubbling "input" event
        } else if (typeof root.Event === "function" && typeof el.dispatchEvent === "function") {
            el.dispatchEvent(new root.Event("input", { bubbles: true }));
        }
    }

    function chipList(container, st) {
        if (st.list && st.list.isConnected !== false && st.list.parentNode && isInside(st.list, container)) {
            return st.list;
        }
        var doc = container.ownerDocument || root.document;
        var list = doc.createElement("div");
        list.className = "segret-chip-list";
        // gr.HTML renders its value in a .prose div; put the chips there so the block keeps its layout.
        var parent = query(container, ".prose") || container;
        parent.appendChild(list);
        st.list = list;
        return list;
    }

    function isInside(el, container) {
        for (var node = el; node; node = node.parentNode) {
            if (node === container) return true;
        }
        return false;
    }

    function render(tab) {
        var st = tabState(tab);
        var els = elements(tab);
        if (!els.chips) return;
        var prompt = els.prompt ? els.prompt.value : "";
        var concepts = els.concepts ? els.concepts.value : "";
        var signature = asText(prompt) + "\u0000" + asText(concepts) + "\u0000" + !!els.concepts;
        var list = st.list;
        var stale = !list || list.isConnected === false || !isInside(list, els.chips);
        if (!stale && signature === st.signature) return; // nothing changed: no DOM writes (onUiUpdate loop-safe)
        list = chipList(els.chips, st);
        st.signature = signature;

        var doc = list.ownerDocument || root.document;
        while (list.firstChild) list.removeChild(list.firstChild);
        var chips = chipModel(prompt, concepts);
        if (!chips.length) {
            var hint = doc.createElement("span");
            hint.className = "segret-chip-hint";
            hint.textContent = "Words of the prompt appear here; click one to add it as a concept.";
            list.appendChild(hint);
            return;
        }
        chips.forEach(function (chip) {
            var button = doc.createElement("button");
            button.setAttribute("type", "button");
            button.className =
                "segret-chip" + (chip.selected ? " segret-chip-selected" : "") + (chip.missing ? " segret-chip-missing" : "");
            button.textContent = chip.word; // textContent, never innerHTML: prompt text is untrusted markup
            button.setAttribute("title", chip.missing ? CHIP_TITLE + " (not found in the prompt)" : CHIP_TITLE);
            button.setAttribute("aria-pressed", chip.selected ? "true" : "false");
            button.setAttribute("data-word", chip.word);
            button.addEventListener("click", function (event) {
                if (event && typeof event.preventDefault === "function") event.preventDefault();
                onChipClick(tab, chip.word);
            });
            list.appendChild(button);
        });
    }

    function safeRender(tab) {
        try {
            render(tab);
        } catch (e) {
            if (root.console && root.console.warn) root.console.warn("[segret] chip rendering failed:", e);
        }
    }

    function onChipClick(tab, word) {
        try {
            var els = elements(tab);
            if (!els.concepts) return;
            setFieldValue(els.concepts, toggleConcept(els.concepts.value, word));
        } catch (e) {
            if (root.console && root.console.warn) root.console.warn("[segret] chip click failed:", e);
        }
        safeRender(tab); // immediate feedback; the input listener's debounced render then finds nothing to do
    }

    function schedule(tab) {
        var st = tabState(tab);
        if (st.timer !== null) root.clearTimeout(st.timer);
        st.timer = root.setTimeout(function () {
            st.timer = null;
            safeRender(tab);
        }, DEBOUNCE_MS);
    }

    function bind(tab) {
        var st = tabState(tab);
        var els = elements(tab);
        ["prompt", "concepts"].forEach(function (key) {
            var el = els[key];
            if (!el || el === st[key] || typeof el.addEventListener !== "function") return;
            st[key] = el; // a re-created element gets its own listeners
            el.addEventListener("input", function () {
                schedule(tab);
            });
            el.addEventListener("change", function () {
                schedule(tab);
            });
        });
    }

    /**
     * Hover tooltips: the Python side puts {elem_id: text} in data-tips of a hidden .segret-tips element in the
     * chips block; each control gets the text as its title (the accordion on its header), unless it has one.
     */
    function applyTooltips(tab) {
        var a = app();
        var holder = query(a, "#segret_" + tab + "_chips .segret-tips");
        if (!holder || typeof holder.getAttribute !== "function") return;
        var tips;
        try {
            tips = JSON.parse(holder.getAttribute("data-tips") || "{}");
        } catch (e) {
            return;
        }
        Object.keys(tips).forEach(function (id) {
            var target = query(a, "#" + id);
            if (target && id === "segret_" + tab) target = query(target, ".label-wrap") || target;
            if (target && typeof target.setAttribute === "function" && !target.getAttribute("title")) {
                target.setAttribute("title", asText(tips[id]));
            }
        });
    }

    function setup() {
        TABS.forEach(function (tab) {
            try {
                applyTooltips(tab);
                bind(tab);
                schedule(tab); // also catches values set by gradio without events (paste infotext, send-to)
            } catch (e) {
                if (root.console && root.console.warn) root.console.warn("[segret] setup failed:", e);
            }
        });
    }

    /** Re-render every tab's chips now (no debounce). */
    function refresh() {
        TABS.forEach(function (tab) {
            try {
                bind(tab);
            } catch (e) {
                /* ignore */
            }
            safeRender(tab);
        });
    }

    api.refresh = refresh;
    api.TABS = TABS.slice();

    root.segret = api;
    if (typeof module !== "undefined" && module.exports) module.exports = api;

    if (typeof root.onUiLoaded === "function") {
        root.onUiLoaded(setup);
        if (typeof root.onUiUpdate === "function") root.onUiUpdate(setup);
    } else if (typeof root.document !== "undefined" && typeof root.document.addEventListener === "function") {
        root.document.addEventListener("DOMContentLoaded", setup);
    }
})(typeof window !== "undefined" ? window : globalThis);
