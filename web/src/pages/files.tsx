export function Files() {
  return (
    <section>
      <h1>Files</h1>
    </section>
  );
}
