// A condition plugin in JavaScript: the VIP check of plugins/vip-check.
//
// Takes the transition when the user is flagged VIP in their profile, or
// has spent at least `min_spent` (args, default 100). Returning a value is
// the `ok` of the WIT result; throwing is its `err`.

export const conditions = {
  evaluate(args, conversation, _event) {
    let parsedArgs, profile;
    try {
      parsedArgs = args ? JSON.parse(args) : {};
      profile = JSON.parse(conversation.userProfile);
    } catch (e) {
      throw { code: "bad-json", message: String(e) };
    }
    const minSpent = parsedArgs.min_spent ?? 100;
    if (typeof minSpent !== "number") {
      throw { code: "bad-args", message: "min_spent must be a number" };
    }
    return profile.vip === true || Number(profile.spent ?? 0) >= minSpent;
  },
};
