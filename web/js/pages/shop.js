// shop.js: the catalogue (search, filters, sort, pagination; state in the
// hash's query so a search can be shared and the back button works) and a
// product's page with its rating and reviews.
import { h, clear, heading, field, money, stars, errorBox, onSubmit, toast, when } from '../ui.js';
import { api, get, post, qs } from '../api.js';
import * as session from '../session.js';
import { refreshCartBadge } from '../badges.js';
import { nameOf } from '../people.js';

const SORTS = [
  ['', 'Best match / newest'], ['newest', 'Newest'], ['price', 'Price: low to high'],
  ['-price', 'Price: high to low'], ['rating', 'Rating'], ['name', 'Name'],
];

let categoriesCache = null;
async function categories() {
  if (!categoriesCache) categoriesCache = get('/api/v1/categories').catch((e) => { categoriesCache = null; throw e; });
  return categoriesCache;
}

export async function addToCart(productId, quantity = 1, ctx) {
  if (!session.user()) {
    toast('Sign in to add to the cart.');
    ctx.go('#/signin?next=' + encodeURIComponent(location.hash || '#/'));
    return false;
  }
  await post('/api/v1/cart/items', { productId, quantity });
  refreshCartBadge();
  return true;
}

function toCents(v) {
  if (v === null || v === '') return '';
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? String(Math.round(n * 100)) : '';
}

export async function catalogue(main, _params, query, ctx) {
  const q = query.get('q') || '';
  const page = Math.max(1, parseInt(query.get('page') || '1', 10) || 1);
  const state = {
    q, category: query.get('category') || '', sort: query.get('sort') || '',
    minPrice: query.get('minPrice') || '', maxPrice: query.get('maxPrice') || '',
    inStock: query.get('inStock') === 'true',
  };
  const catSelect = h('select', { name: 'category' }, h('option', { value: '' }, 'All categories'));
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Search the catalogue' },
    field('Search', h('input', { type: 'search', name: 'q', value: state.q, placeholder: 'e.g. mug, jeans' })),
    field('Category', catSelect),
    field('Min price', h('input', { type: 'number', name: 'minPrice', min: 0, step: '0.01', inputmode: 'decimal', value: state.minPrice })),
    field('Max price', h('input', { type: 'number', name: 'maxPrice', min: 0, step: '0.01', inputmode: 'decimal', value: state.maxPrice })),
    field('Sort by', h('select', { name: 'sort' }, SORTS.map(([v, t]) => h('option', { value: v, selected: v === state.sort }, t)))),
    h('div', { class: 'field check' }, h('input', { type: 'checkbox', name: 'inStock', id: 'f-instock', checked: state.inStock }),
      h('label', { for: 'f-instock' }, 'In stock only')),
    h('button', { type: 'submit' }, 'Search'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const fd = new FormData(form);
    const p = {
      q: fd.get('q').trim(), category: fd.get('category'), sort: fd.get('sort'),
      minPrice: fd.get('minPrice'), maxPrice: fd.get('maxPrice'), inStock: fd.get('inStock') ? 'true' : '',
    };
    ctx.go('#/' + qs(p));
  });
  const results = h('section', { 'aria-labelledby': 'results-title', 'aria-busy': 'true' });
  clear(main, heading('Shop'), form, results);

  categories().then((cats) => {
    for (const c of cats) catSelect.appendChild(h('option', { value: c.slug, selected: c.slug === state.category }, `${c.name} (${c.productCount})`));
  }).catch(() => {
    catSelect.appendChild(h('option', { value: state.category, selected: true, disabled: !state.category }, 'Categories could not be loaded'));
  });

  const params = {
    q: state.q, category: state.category, sort: state.sort,
    minPrice: toCents(state.minPrice), maxPrice: toCents(state.maxPrice),
    inStock: state.inStock ? 'true' : '', page, limit: 12,
  };
  let doc;
  try {
    doc = await api('GET', '/api/v1/products' + qs(params));
  } catch (err) {
    results.removeAttribute('aria-busy');
    clear(results, h('h2', { id: 'results-title' }, 'Products'), errorBox(err, 'The catalogue could not be loaded'));
    results.dataset.for = location.hash;
    return;
  }
  const pg = doc.pagination || { page: 1, pages: 1, total: doc.data.length };
  const summary = pg.total === 0 ? 'No products match.' :
    `${pg.total} product${pg.total === 1 ? '' : 's'}${state.q ? ` for “${state.q}”` : ''} · page ${pg.page} of ${Math.max(pg.pages, 1)}`;
  results.removeAttribute('aria-busy');
  clear(results, h('h2', { id: 'results-title' }, 'Products'),
    h('p', { class: 'muted', role: 'status' }, summary),
    h('ul', { class: 'grid products' }, doc.data.map((p) => productCard(p, ctx))),
    pager(pg, query, ctx));
  // Which search these results answer (the browser tests wait for it).
  results.dataset.for = location.hash;
}

function productCard(p, ctx) {
  const msg = h('div', { class: 'card-msg', 'aria-live': 'polite' });
  const add = h('button', {
    type: 'button', class: 'small', disabled: !p.inStock,
    'aria-label': `Add ${p.name} to the cart`,
    onclick: async () => {
      add.disabled = true;
      msg.replaceChildren();
      try {
        if (await addToCart(p.id, 1, ctx)) msg.replaceChildren(h('span', { class: 'ok' }, 'Added to the cart'));
      } catch (err) {
        msg.replaceChildren(errorBox(err, 'Not added'));
      } finally {
        add.disabled = !p.inStock;
      }
    },
  }, p.inStock ? 'Add to cart' : 'Out of stock');
  return h('li', { class: 'card product', 'data-product': p.name },
    h('h3', null, h('a', { href: '#/product/' + encodeURIComponent(p.id) }, p.name)),
    h('p', { class: 'muted small' }, p.category),
    h('p', { class: 'desc' }, p.description || ''),
    h('p', { class: 'price' }, money(p.priceCents, p.currency)),
    stars(p.rating, p.reviewCount),
    h('p', { class: p.inStock ? 'ok small' : 'warn small' }, p.inStock ? 'In stock' : 'Out of stock'),
    add, msg);
}

function pager(pg, query, ctx) {
  if (!pg.pages || pg.pages <= 1) return null;
  const link = (n, text, label) => {
    const qq = new URLSearchParams(query);
    qq.set('page', n);
    return h('a', { href: '#/?' + qq.toString(), class: 'button small secondary', 'aria-label': label }, text);
  };
  return h('nav', { class: 'pager', 'aria-label': 'Pages' },
    pg.page > 1 ? link(pg.page - 1, '← Previous', 'Previous page') : null,
    h('span', { 'aria-current': 'page' }, `Page ${pg.page} of ${pg.pages}`),
    pg.page < pg.pages ? link(pg.page + 1, 'Next →', 'Next page') : null);
}

export async function product(main, [id], _query, ctx) {
  let p;
  try {
    p = await get('/api/v1/products/' + encodeURIComponent(id));
  } catch (err) {
    clear(main, heading(err.status === 404 ? 'No such product' : 'Product'), errorBox(err, 'The product could not be loaded'),
      h('p', null, h('a', { href: '#/' }, 'Back to the shop')));
    return;
  }
  const qty = h('input', { type: 'number', name: 'quantity', min: 1, max: 99, value: 1, inputmode: 'numeric' });
  const msg = h('div', { 'aria-live': 'polite' });
  const buy = h('form', { class: 'buy' }, field('Quantity', qty),
    h('button', { type: 'submit', disabled: !p.inStock }, p.inStock ? 'Add to cart' : 'Out of stock'));
  buy.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    msg.replaceChildren();
    try {
      if (await addToCart(p.id, Math.max(1, Math.min(99, parseInt(qty.value, 10) || 1)), ctx)) {
        msg.replaceChildren(h('p', { class: 'ok' }, 'Added to the cart. ', h('a', { href: '#/cart' }, 'See the cart')));
      }
    } catch (err) {
      msg.replaceChildren(errorBox(err, 'Not added'));
    }
  });
  const reviews = h('section', { 'aria-labelledby': 'reviews-title' });
  clear(main,
    h('p', null, h('a', { href: '#/' }, '← Back to the shop')),
    heading(p.name),
    h('div', { class: 'product-page' },
      h('div', null,
        h('p', { class: 'muted' }, 'Category: ', p.category),
        h('p', null, p.description || ''),
        h('p', { class: 'price big' }, money(p.priceCents, p.currency)),
        h('p', { id: 'product-rating' }, stars(p.rating, p.reviewCount)),
        h('p', { class: p.inStock ? 'ok' : 'warn' }, p.inStock ? 'In stock' : 'Out of stock')),
      h('div', { class: 'card' }, buy, msg)),
    reviews);
  await renderReviews(reviews, p, 1);
}

async function renderReviews(box, p, page) {
  const list = h('div');
  clear(box, h('h2', { id: 'reviews-title' }, 'Reviews'), list);
  try {
    const doc = await api('GET', `/api/v1/products/${encodeURIComponent(p.id)}/reviews?page=${page}&limit=10`);
    if (!doc.data.length) list.appendChild(h('p', { class: 'muted' }, 'No reviews yet.'));
    list.appendChild(h('ul', { class: 'reviews' }, doc.data.map((r) => {
      const who = h('strong', null, 'A customer');
      nameOf(r.userId).then((n) => { who.textContent = n; });
      return h('li', { class: 'card' },
        h('p', null, stars(r.rating), ' ', who,
          r.verifiedPurchase ? h('span', { class: 'tag' }, 'Verified purchase') : null),
        r.text ? h('p', null, r.text) : null,
        h('p', { class: 'muted small' }, when(r.createdAt)));
    })));
    const pg = doc.pagination;
    if (pg && pg.pages > 1) {
      list.appendChild(h('nav', { class: 'pager', 'aria-label': 'Review pages' },
        page > 1 ? h('button', { type: 'button', class: 'small secondary', onclick: () => renderReviews(box, p, page - 1) }, '← Newer') : null,
        h('span', null, `Page ${page} of ${pg.pages}`),
        page < pg.pages ? h('button', { type: 'button', class: 'small secondary', onclick: () => renderReviews(box, p, page + 1) }, 'Older →') : null));
    }
  } catch (err) {
    list.appendChild(errorBox(err, 'Reviews could not be loaded'));
  }
  if (!session.user()) {
    box.appendChild(h('p', null, h('a', { href: '#/signin?next=' + encodeURIComponent(location.hash) }, 'Sign in'), ' to write a review.'));
    return;
  }
  const form = h('form', { class: 'card review-form', 'aria-labelledby': 'write-title' },
    h('h3', { id: 'write-title' }, 'Write a review'),
    field('Rating', h('select', { name: 'rating', required: true },
      [5, 4, 3, 2, 1].map((n) => h('option', { value: n }, `${n} star${n === 1 ? '' : 's'}`)))),
    field('Your review', h('textarea', { name: 'text', rows: 3, maxlength: 2000 })),
    h('button', { type: 'submit' }, 'Post review'));
  onSubmit(form, async (fd) => {
    const body = { rating: Number(fd.get('rating')) };
    const text = fd.get('text').trim();
    if (text) body.text = text;
    try {
      await post(`/api/v1/products/${encodeURIComponent(p.id)}/reviews`, body);
    } catch (err) {
      if (err.status === 409) err.message = 'You have already reviewed this product.';
      throw err;
    }
    toast('Thank you for your review.');
    const fresh = await get('/api/v1/products/' + encodeURIComponent(p.id)).catch(() => null);
    if (fresh) {
      const r = document.getElementById('product-rating');
      if (r) r.replaceChildren(stars(fresh.rating, fresh.reviewCount));
    }
    await renderReviews(box, fresh || p, 1);
  });
  box.appendChild(form);
}
