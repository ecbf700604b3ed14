// account.js: sign in and register. After either, the person goes back to
// where they were sent from (?next=) or to the shop.
import { h, clear, heading, field, onSubmit, toast } from '../ui.js';
import { post } from '../api.js';
import * as session from '../session.js';

function nextHash(query) {
  const n = query.get('next');
  return n && n.startsWith('#/') ? n : '#/';
}

export function signin(main, _params, query, ctx) {
  const form = h('form', { class: 'card narrow', 'aria-labelledby': 'signin-title', novalidate: true },
    field('Email', h('input', { type: 'email', name: 'email', autocomplete: 'email', required: true })),
    field('Password', h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true })),
    h('button', { type: 'submit' }, 'Sign in'),
    h('p', null, 'New here? ', h('a', { href: '#/register' + (query.get('next') ? '?next=' + encodeURIComponent(query.get('next')) : '') }, 'Create an account')));
  onSubmit(form, async (fd) => {
    const data = await post('/api/v1/auth/login', { email: fd.get('email').trim(), password: fd.get('password') }, { auth: false });
    session.start(data);
    toast('Signed in as ' + data.user.username + '.');
    ctx.go(nextHash(query));
  });
  const title = heading('Sign in');
  title.id = 'signin-title';
  clear(main, title, form);
  form.querySelector('input').focus();
}

export function register(main, _params, query, ctx) {
  const form = h('form', { class: 'card narrow', 'aria-labelledby': 'register-title', novalidate: true },
    field('Username', h('input', { name: 'username', autocomplete: 'username', required: true, minlength: 3, maxlength: 50, pattern: '[A-Za-z0-9_.\\-]+' }),
      '3 to 50 letters, digits, dots, dashes or underscores'),
    field('Email', h('input', { type: 'email', name: 'email', autocomplete: 'email', required: true })),
    field('Password', h('input', { type: 'password', name: 'password', autocomplete: 'new-password', required: true, minlength: 8 }),
      'At least 8 characters'),
    h('button', { type: 'submit' }, 'Create account'),
    h('p', null, 'Already registered? ', h('a', { href: '#/signin' }, 'Sign in')));
  onSubmit(form, async (fd) => {
    const data = await post('/api/v1/auth/register', {
      username: fd.get('username').trim(), email: fd.get('email').trim(), password: fd.get('password'),
    }, { auth: false });
    session.start(data);
    toast('Welcome, ' + data.user.username + '!');
    ctx.go(nextHash(query));
  });
  const title = heading('Create an account');
  title.id = 'register-title';
  clear(main, title, form);
  form.querySelector('input').focus();
}

// For pages that need a signed-in person: a short explanation and the way in.
export function needSignIn(main, what) {
  const next = encodeURIComponent(location.hash || '#/');
  clear(main, heading(what),
    h('p', null, 'Please ', h('a', { href: '#/signin?next=' + next }, 'sign in'), ' or ',
      h('a', { href: '#/register?next=' + next }, 'create an account'), ' to see this page.'));
}
