/* The sign-up form's time zone field, filled in with the zone this device says it is in.
 *
 * A progressive enhancement: without it the field is simply empty (the newsletter's own
 * zone) and the reader may type one. It fills the field only on a fresh form, only when
 * it is empty, and only with a zone the site suggests (the field's list), so a browser
 * that cannot tell ("Etc/Unknown") never gets the form refused. The reader can change it.
 */
(function () {
  "use strict";
  var field = document.getElementById("timezone");
  if (!field || !field.hasAttribute("data-guess") || field.value) {
    return;
  }
  var zone = "";
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (e) {
    return;
  }
  var options = field.list ? field.list.options : [];
  var wanted = zone.toLowerCase();
  for (var i = 0; i < options.length; i++) {
    if (options[i].value.toLowerCase() === wanted) {
      field.value = options[i].value;
      return;
    }
  }
})();
