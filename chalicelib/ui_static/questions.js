// The tenant's enabled judge questions (GET /eval/questions), cached for the page's life and
// forgotten when an admin saves the catalog in this tab, so the eval dialog shows the new one.

import { api } from "./api.js";

let questionsPromise = null;

export function loadQuestions() {
  if (!questionsPromise) {
    questionsPromise = api("GET", "/eval/questions").then((r) => r.body.questions).catch((err) => {
      questionsPromise = null;
      throw err;
    });
  }
  return questionsPromise;
}

export function forgetQuestions() {
  questionsPromise = null;
}
