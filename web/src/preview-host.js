// The page inside the preview iframe. It is loaded sandboxed (opaque origin:
// no access to the app's storage or tokens) and has its own, looser CSP so
// the project's scripts and styles can run. The app posts it the project's
// index.html and the local files it references; this page turns those into
// blob: URLs of its own origin and writes the document.

(function () {
  var appOrigin = new URL(location.href).origin;
  addEventListener('message', function (e) {
    if (e.source !== parent || e.origin !== appOrigin) return;
    var msg = e.data;
    if (!msg || msg.type !== 'render') return;
    var urls = {};
    Object.keys(msg.files || {}).forEach(function (path) {
      var f = msg.files[path];
      urls[path] = URL.createObjectURL(new Blob([f.bytes], { type: f.type }));
    });
    var doc = new DOMParser().parseFromString(msg.html, 'text/html');
    var local = function (ref) {
      if (!ref || /^([a-z][a-z0-9+.-]*:|\/\/|#)/i.test(ref)) return '';
      var clean = ref.split(/[?#]/)[0].replace(/^\.\//, '').replace(/^\//, '');
      return urls[clean] ? clean : '';
    };
    doc.querySelectorAll('[src], link[href]').forEach(function (el) {
      var attr = el.hasAttribute('src') ? 'src' : 'href';
      var path = local(el.getAttribute(attr));
      if (path) el.setAttribute(attr, urls[path]);
    });
    document.open();
    document.write('<!doctype html>\n' + doc.documentElement.outerHTML);
    document.close();
  });
  parent.postMessage({ type: 'preview-ready' }, appOrigin);
})();
