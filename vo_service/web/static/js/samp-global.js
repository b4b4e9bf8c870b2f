// Loaded (as a classic script) just before static/vendor/samp.js: sampjs 1.0.3 from npm
// ends with the CommonJS line `module.exports = { samp }`, which throws in a page. This
// gives that line an object to write to; the library itself defines the global `samp`.
var module = window.module || { exports: {} };
