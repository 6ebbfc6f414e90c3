export function Reservations() {
  return (
    <section>
      <h1>Reservations</h1>
    </section>
  );
}
