import { useState } from "preact/hooks";
import { identity, signIn } from "../api";
import { ErrorText, Field, useAction } from "../ui";

export function SignIn() {
  const [mode, setMode] = useState<"in" | "up">("in");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [displayName, setDisplayName] = useState("");
  const [email, setEmail] = useState("");
  const { busy, error, run } = useAction();

  const submit = (e: Event) => {
    e.preventDefault();
    void run(async () => {
      if (mode === "up") await identity.register({ username, password, displayName: displayName || username, email });
      await signIn(username, password);
    });
  };

  return (
    <main class="sign-in" id="main">
      <h1>Agora</h1>
      <div role="tablist" aria-label="Account" class="tabs">
        <button type="button" role="tab" aria-selected={mode === "in"} onClick={() => setMode("in")}>
          Sign in
        </button>
        <button type="button" role="tab" aria-selected={mode === "up"} onClick={() => setMode("up")}>
          Register
        </button>
      </div>
      <form onSubmit={submit} aria-label={mode === "in" ? "Sign in" : "Register"}>
        <Field label="Username">
          <input name="username" autocomplete="username" required value={username} onInput={(e) => setUsername(e.currentTarget.value)} />
        </Field>
        <Field label="Password" hint={mode === "up" ? "At least 12 characters." : undefined}>
          <input
            name="password"
            type="password"
            autocomplete={mode === "in" ? "current-password" : "new-password"}
            required
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </Field>
        {mode === "up" && (
          <>
            <Field label="Display name">
              <input name="displayName" value={displayName} onInput={(e) => setDisplayName(e.currentTarget.value)} />
            </Field>
            <Field label="Email">
              <input name="email" type="email" required value={email} onInput={(e) => setEmail(e.currentTarget.value)} />
            </Field>
          </>
        )}
        <ErrorText error={error} />
        <button type="submit" class="primary" disabled={busy}>
          {mode === "in" ? "Sign in" : "Create account"}
        </button>
      </form>
    </main>
  );
}
