// Moves the one-time link token from the URL fragment (never sent to the
// server, so never logged) into the form, then removes it from the address bar.
"use strict";
(function () {
  var token = window.location.hash.replace(/^#/, "");
  var field = document.getElementById("link-token");
  if (field && token) {
    field.value = token;
    window.history.replaceState(null, "", window.location.pathname);
  }
})();
