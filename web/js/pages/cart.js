// cart.js: the cart (quantities, removal, subtotals) and the checkout
// (address and card; the order is placed from the cart with an
// Idempotency-Key kept for this checkout, so a double click or a retry
// after a lost answer places one order).
import { h, clear, heading, field, money, errorBox, onSubmit, toast, randomKey } from '../ui.js';
import { get, post, put, del } from '../api.js';
import * as session from '../session.js';
import { refreshCartBadge } from '../badges.js';
import { needSignIn } from './account.js';

export async function cart(main, _p, _q, ctx) {
  if (!session.user()) return needSignIn(main, 'Your cart');
  const box = h('div');
  clear(main, heading('Your cart'), box);
  await renderCart(box, ctx);
}

async function renderCart(box, ctx) {
  let c;
  try {
    c = await get('/api/v1/cart');
  } catch (err) {
    clear(box, errorBox(err, 'The cart could not be loaded'));
    return;
  }
  refreshCartBadge();
  if (!c.items.length) {
    clear(box, h('p', null, 'Your cart is empty. ', h('a', { href: '#/' }, 'Browse the shop.')));
    return;
  }
  const msg = h('div', { 'aria-live': 'polite' });
  const rows = c.items.map((it) => {
    const qty = h('input', { type: 'number', min: 1, max: 99, value: it.quantity, inputmode: 'numeric', id: 'qty-' + it.productId,
      'aria-label': `Quantity of ${it.name}` });
    const update = async () => {
      const n = parseInt(qty.value, 10);
      if (!(n >= 1 && n <= 99)) {
        msg.replaceChildren(errorBox(new Error('A quantity is a whole number from 1 to 99.'), 'Not changed'));
        return;
      }
      try {
        await put('/api/v1/cart/items/' + encodeURIComponent(it.productId), { quantity: n });
        toast(`${it.name}: quantity ${n}.`);
        await renderCart(box, ctx);
      } catch (err) {
        msg.replaceChildren(errorBox(err, 'The quantity was not changed'));
      }
    };
    qty.addEventListener('change', update);
    return h('tr', { 'data-product': it.name },
      h('th', { scope: 'row' }, h('a', { href: '#/product/' + encodeURIComponent(it.productId) }, it.name),
        it.available === false ? h('div', { class: 'warn small' }, 'No longer available: remove it to check out') : null),
      h('td', { 'data-label': 'Price' }, money(it.priceCents, it.currency)),
      h('td', { 'data-label': 'Quantity' }, qty),
      h('td', { 'data-label': 'Total' }, money(it.lineTotalCents, it.currency)),
      h('td', null, h('button', {
        type: 'button', class: 'small secondary', 'aria-label': `Remove ${it.name}`,
        onclick: async () => {
          try {
            await del('/api/v1/cart/items/' + encodeURIComponent(it.productId));
            toast(`${it.name} removed.`);
            await renderCart(box, ctx);
          } catch (err) {
            msg.replaceChildren(errorBox(err, 'Not removed'));
          }
        },
      }, 'Remove')));
  });
  clear(box,
    c.pricesMayBeStale ? h('p', { class: 'warn', role: 'status' }, 'The catalogue cannot be reached right now: prices shown are the last known ones; the order is priced again when placed.') : null,
    h('div', { class: 'table-wrap' }, h('table', { class: 'cart stack' },
      h('caption', { class: 'sr' }, 'Items in your cart'),
      h('thead', null, h('tr', null, ['Product', 'Price', 'Quantity', 'Total', ''].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', null, rows))),
    msg,
    h('p', { class: 'total', id: 'cart-total' }, 'Subtotal: ',
      c.subtotals.map((s) => h('strong', null, money(s.subtotalCents, s.currency))), ` (${c.itemCount} item${c.itemCount === 1 ? '' : 's'})`),
    h('p', null, h('a', { href: '#/checkout', class: 'button' }, 'Check out'), ' ',
      h('button', {
        type: 'button', class: 'secondary', onclick: async () => {
          try {
            await del('/api/v1/cart');
            await renderCart(box, ctx);
          } catch (err) {
            msg.replaceChildren(errorBox(err, 'The cart was not emptied'));
          }
        },
      }, 'Empty the cart')));
}

const COUNTRIES = [['GB', 'United Kingdom'], ['US', 'United States'], ['DE', 'Germany'], ['FR', 'France'],
  ['NL', 'Netherlands'], ['ES', 'Spain'], ['IT', 'Italy'], ['SE', 'Sweden'], ['CA', 'Canada'], ['AU', 'Australia'], ['JP', 'Japan']];

export async function checkout(main, _p, _q, ctx) {
  if (!session.user()) return needSignIn(main, 'Checkout');
  let c;
  try {
    c = await get('/api/v1/cart');
  } catch (err) {
    clear(main, heading('Checkout'), errorBox(err, 'The cart could not be loaded'));
    return;
  }
  if (!c.items.length) {
    clear(main, heading('Checkout'), h('p', null, 'Your cart is empty. ', h('a', { href: '#/' }, 'Browse the shop.')));
    return;
  }
  const key = randomKey();
  const year = new Date().getFullYear();
  const u = session.user();
  const form = h('form', { class: 'checkout', 'aria-label': 'Checkout', novalidate: true },
    h('fieldset', null, h('legend', null, 'Shipping address'),
      field('Full name', h('input', { name: 'name', autocomplete: 'name', required: true, value: u.username })),
      field('Address', h('input', { name: 'line1', autocomplete: 'address-line1', required: true })),
      field('Address, line 2 (optional)', h('input', { name: 'line2', autocomplete: 'address-line2' })),
      field('City', h('input', { name: 'city', autocomplete: 'address-level2', required: true })),
      field('Postal code', h('input', { name: 'postalCode', autocomplete: 'postal-code', required: true })),
      field('Country', h('select', { name: 'country', autocomplete: 'country', required: true },
        COUNTRIES.map(([v, t]) => h('option', { value: v }, t))))),
    h('fieldset', null, h('legend', null, 'Payment card'),
      field('Card number', h('input', { name: 'number', autocomplete: 'cc-number', inputmode: 'numeric', required: true }),
        'Test cards: 4242 4242 4242 4242 is accepted, 4000 0000 0000 0002 is declined.'),
      h('div', { class: 'row' },
        field('Expiry month', h('select', { name: 'expMonth', autocomplete: 'cc-exp-month' },
          Array.from({ length: 12 }, (_, i) => h('option', { value: i + 1, selected: i === 11 }, String(i + 1).padStart(2, '0'))))),
        field('Expiry year', h('select', { name: 'expYear', autocomplete: 'cc-exp-year' },
          Array.from({ length: 10 }, (_, i) => h('option', { value: year + i, selected: i === 2 }, year + i)))),
        field('CVC', h('input', { name: 'cvc', autocomplete: 'cc-csc', inputmode: 'numeric', required: true, maxlength: 4, size: 4 })))),
    h('p', { class: 'total' }, 'To pay: ', c.subtotals.map((s) => h('strong', null, money(s.subtotalCents, s.currency))),
      ' (the total is computed again from the catalogue when the order is placed)'),
    h('button', { type: 'submit' }, 'Place order'));
  onSubmit(form, async (fd) => {
    const missing = ['name', 'line1', 'city', 'postalCode', 'number', 'cvc'].filter((k) => !String(fd.get(k) || '').trim());
    if (missing.length) {
      const labels = { name: 'full name', line1: 'address', city: 'city', postalCode: 'postal code', number: 'card number', cvc: 'CVC' };
      throw new Error('Please fill in: ' + missing.map((k) => labels[k]).join(', ') + '.');
    }
    const addr = { name: fd.get('name').trim(), line1: fd.get('line1').trim(), city: fd.get('city').trim(),
      postalCode: fd.get('postalCode').trim(), country: fd.get('country') };
    if (fd.get('line2').trim()) addr.line2 = fd.get('line2').trim();
    const order = await post('/api/v1/orders', {
      fromCart: true,
      shippingAddress: addr,
      paymentMethod: { type: 'card', number: fd.get('number').replace(/[\s-]/g, ''), expMonth: Number(fd.get('expMonth')),
        expYear: Number(fd.get('expYear')), cvc: fd.get('cvc').trim() },
    }, { headers: { 'Idempotency-Key': key } });
    toast('Order placed: waiting for payment.');
    refreshCartBadge();
    ctx.go('#/orders/' + encodeURIComponent(order.id));
  });
  clear(main, heading('Checkout'), form);
}

