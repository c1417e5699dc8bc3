// MathJax 3 for the Markdown pages (pymdownx.arithmatex, generic mode) and for the notebooks'
// Markdown cells (rendered by mkdocs-jupyter with $...$ and $$...$$ left in the text). Only
// those elements are typeset, so a dollar sign elsewhere on a page is left alone.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: "tex2jax_ignore",
  },
  startup: {
    typeset: false,
    pageReady: () => MathJax.startup.defaultPageReady().then(typesetMath),
  },
};

function typesetMath() {
  const elements = document.querySelectorAll(".arithmatex, .jp-MarkdownOutput");
  if (elements.length) {
    return MathJax.typesetPromise(Array.from(elements));
  }
  return Promise.resolve();
}

document$.subscribe(() => {
  if (window.MathJax && MathJax.typesetPromise) {
    MathJax.startup.output.clearCache();
    MathJax.typesetClear();
    MathJax.texReset();
    typesetMath();
  }
});
